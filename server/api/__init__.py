"""gRPC services: thin translations between messages and the control plane."""
