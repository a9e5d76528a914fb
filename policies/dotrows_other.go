//go:build !amd64

package policies

const haveDotRowsAsm = false

func dotRowsAsm(out, q, keys []float32, rows []int, stride int) {
	dotRowsGo(out, q, keys, rows, stride)
}
