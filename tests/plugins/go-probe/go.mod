module go-probe

go 1.24
