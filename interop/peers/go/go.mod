module atls-testbed/interop/peers/go

go 1.19
