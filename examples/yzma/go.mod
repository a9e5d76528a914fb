module github.com/kvtrim/kvtrim/examples/yzma

go 1.26.8

require (
	github.com/hybridgroup/yzma v1.28.0
	github.com/kvtrim/kvtrim v0.0.0
)

require (
	github.com/chewxy/math32 v1.10.1 // indirect
	github.com/ebitengine/purego v0.11.3 // indirect
	github.com/jupiterrider/ffi v0.7.0 // indirect
	github.com/mattn/go-colorable v0.1.14 // indirect
	github.com/mattn/go-isatty v0.0.20 // indirect
	github.com/rs/zerolog v1.35.1 // indirect
	github.com/viterin/partial v1.1.0 // indirect
	github.com/viterin/vek v0.4.3 // indirect
	golang.org/x/exp v0.0.0-20230817173708-d852ddb80c63 // indirect
	golang.org/x/sys v0.43.0 // indirect
)

replace github.com/kvtrim/kvtrim => ../..
