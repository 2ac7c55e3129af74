module bingeplus/bench/player

go 1.26
