module conn-rate-limit

go 1.24
