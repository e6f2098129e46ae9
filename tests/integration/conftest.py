from tests.integration.store_fixtures import plane

__all__ = ["plane"]
