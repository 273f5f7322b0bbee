module tls_go

go 1.19
