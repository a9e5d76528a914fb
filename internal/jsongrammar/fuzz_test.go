package jsongrammar

import "testing"

// FuzzFromSchema: any input, a schema or not, converts or gives an error;
// nothing panics or loops (a request's json_schema reaches it unchecked).
func FuzzFromSchema(f *testing.F) {
	for _, s := range []string{
		`{"type":"object","properties":{"a":{"type":"integer","minimum":-5,"maximum":99}},"required":["a"]}`,
		`{"$ref":"#/$defs/n","$defs":{"n":{"type":"array","items":{"$ref":"#/$defs/n"},"maxItems":2}}}`,
		`{"type":"string","pattern":"^(a|b)*[c-e]{2,3}\\d?$"}`,
		`{"allOf":[{"enum":[1,2]},{"enum":[2,3]}]}`,
		`{"anyOf":[{"type":"null"},{"const":{"x":[1]}}]}`,
		`{"type":["string","null"],"format":"date-time"}`,
		`{"properties":{"":{}},"additionalProperties":{"type":"number"}}`,
		`{"type":"integer","exclusiveMinimum":1e300}`,
		`[`, `null`, `true`, `{"$ref":"#"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, schema []byte) {
		g, err := FromSchema(schema)
		if err == nil && g == "" {
			t.Errorf("%s: no grammar and no error", schema)
		}
	})
}
