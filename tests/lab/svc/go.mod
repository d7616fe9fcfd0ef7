module labsvc

go 1.19
