#!/bin/sh
# Prints the environment variables llama-server documents in its --help
# (the "(env: NAME)" under a flag), one a line with the flag's spellings:
#
#   LLAMA_ARG_CTX_SIZE -c,--ctx-size
#
# kvtrim serve reads or refuses each of them (llamaEnv in
# cmd/kvtrim/serve.go); TestServeEnvironmentList checks that against
# llama-server-env.txt beside this script, and against BIN's --help when
# KVTRIM_LLAMA_BIN names BIN. BIN is a folder holding llama-server of the
# pinned version and its libraries (native/build-llama.sh BIN builds them):
#
#   testdata/serve/record-env.sh BIN >testdata/serve/llama-server-env.txt
set -eu
bin=${1:?usage: record-env.sh BIN (BIN: the folder of llama-server)}
LD_LIBRARY_PATH="$bin${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$bin/llama-server" --help 2>/dev/null | awk '
# A flag line starts in the first column: its spellings and value, then
# (when they fit in 37 columns) the help text from column 41.
/^-/ {
	head = $0
	if (length(head) > 40 && substr(head, 38, 3) == "   ")
		head = substr(head, 1, 40)
	n = split(head, words, " ")
	flags = ""
	for (i = 1; i <= n; i++)
		if (words[i] ~ /^-/) {
			sub(/,$/, "", words[i])
			flags = flags (flags == "" ? "" : ",") words[i]
		}
	next
}
/^ +\(env: [A-Za-z0-9_]+\)$/ {
	name = $0
	sub(/^ +\(env: /, "", name)
	sub(/\)$/, "", name)
	print name, flags
}'
