"""Generated gRPC stubs of Weir's wire contract (proto/weir/v1). Do not edit: run `make proto`."""
