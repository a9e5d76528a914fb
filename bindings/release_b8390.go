package bindings

// releaseB8390 is llama.cpp b8390, as node-llama-cpp 3.18.1 ships it: the
// oldest supported. Its context parameters are 136 bytes (no n_rs_seq,
// n_outputs_max, ctx_type or ctx_other), its sequence states have no
// header, and it has no on-device state. Its fingerprint came in b8352
// (older builds lack it): builds from b8352 to b8390 export the same
// functions and, where the defaults probe agrees, share its layout.
var releaseB8390 = &Release{
	Name:           "b8390",
	Fingerprint:    "llama_model_init_from_user",
	GGML:           "0.9.7",
	Layout:         "b8390.txt",
	SeqFileVersion: 2,
	LegacySamplers: true,
	Defaults:       baseDefaults,
}
