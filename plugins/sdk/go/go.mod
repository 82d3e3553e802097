module hyperfilter.local/hyperfilter

go 1.24
