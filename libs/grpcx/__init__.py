"""gRPC plumbing shared by every service: server builder, error mapping, auth, channels."""
