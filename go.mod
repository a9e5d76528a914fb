module github.com/kvtrim/kvtrim

go 1.26.8

require (
	github.com/ebitengine/purego v0.11.3 // indirect
	github.com/mattn/go-colorable v0.1.14 // indirect
	github.com/mattn/go-isatty v0.0.20 // indirect
	github.com/rs/zerolog v1.35.1 // indirect
	github.com/spf13/pflag v1.1.0 // indirect
	golang.org/x/sys v0.29.0 // indirect
)
