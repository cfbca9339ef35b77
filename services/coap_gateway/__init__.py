"""The CoAP gateway: a CoAP front for constrained devices that forwards ATLS to the service."""
