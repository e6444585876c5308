module fcrest/bench/go_hello

go 1.19
