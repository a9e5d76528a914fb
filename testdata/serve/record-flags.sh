#!/bin/sh
# Prints llama-server's flags from its --help, one a line: the spellings,
# then "value" when the flag takes one, else "switch":
#
#   -c,--ctx-size value
#   --offline switch
#
# kvtrim serve takes every one of them (its own flags, and llamaFlags in
# cmd/kvtrim/serve_llamaflags.go); TestServeTakesEveryLlamaFlag checks that
# against llama-server-flags.txt beside this script, and against BIN's
# --help when KVTRIM_LLAMA_BIN names BIN (see record-env.sh):
#
#   testdata/serve/record-flags.sh BIN >testdata/serve/llama-server-flags.txt
set -eu
bin=${1:?usage: record-flags.sh BIN (BIN: the folder of llama-server)}
LD_LIBRARY_PATH="$bin${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$bin/llama-server" --help 2>/dev/null | awk '
# A flag line starts in the first column: its spellings, separated by a
# comma and spaces, and its value, then two or more spaces and the help.
/^-/ && !/^-----/ {
	line = $0
	gsub(/,[ ]+/, ", ", line)
	if (match(line, /[ ][ ]+/))
		line = substr(line, 1, RSTART - 1)
	n = split(line, parts, ", ")
	flags = ""
	kind = "switch"
	for (i = 1; i <= n; i++) {
		split(parts[i], words, " ")
		flags = flags (flags == "" ? "" : ",") words[1]
		if (parts[i] ~ / /)
			kind = "value"
	}
	print flags, kind
}'
