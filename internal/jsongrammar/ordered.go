package jsongrammar

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// object is a JSON object with its keys in the order written: a schema's
// properties are generated in that order, as llama.cpp generates them.
type object struct {
	keys []string
	vals map[string]any
}

// get is the value of key, and whether the object has it.
func (o *object) get(key string) (any, bool) {
	v, ok := o.vals[key]
	return v, ok
}

// decode parses JSON into *object, []any, string, json.Number, bool and
// nil values.
func decode(data []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	v, err := decodeValue(d)
	if err != nil {
		return nil, err
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, errors.New("data after the schema's JSON value")
	}
	return v, nil
}

func decodeValue(d *json.Decoder) (any, error) {
	tok, err := d.Token()
	if err != nil {
		return nil, err
	}
	switch tok {
	case json.Delim('{'):
		o := &object{vals: map[string]any{}}
		for d.More() {
			k, err := d.Token()
			if err != nil {
				return nil, err
			}
			key := k.(string) // the decoder gives an object's keys as strings
			v, err := decodeValue(d)
			if err != nil {
				return nil, err
			}
			if _, dup := o.vals[key]; !dup {
				o.keys = append(o.keys, key)
			}
			o.vals[key] = v
		}
		_, err := d.Token() // '}'
		return o, err
	case json.Delim('['):
		list := []any{}
		for d.More() {
			v, err := decodeValue(d)
			if err != nil {
				return nil, err
			}
			list = append(list, v)
		}
		_, err := d.Token() // ']'
		return list, err
	}
	switch tok.(type) {
	case string, json.Number, bool, nil:
		return tok, nil
	}
	return nil, fmt.Errorf("unexpected JSON token %v", tok)
}

// encode writes v back as compact JSON, keys in their order, without
// HTML escapes: the text a const or enum value must be generated as.
func encode(v any) string {
	var b bytes.Buffer
	encodeTo(&b, v)
	return b.String()
}

func encodeTo(b *bytes.Buffer, v any) {
	switch v := v.(type) {
	case *object:
		b.WriteByte('{')
		for i, k := range v.keys {
			if i > 0 {
				b.WriteByte(',')
			}
			encodeTo(b, k)
			b.WriteByte(':')
			encodeTo(b, v.vals[k])
		}
		b.WriteByte('}')
	case []any:
		b.WriteByte('[')
		for i, e := range v {
			if i > 0 {
				b.WriteByte(',')
			}
			encodeTo(b, e)
		}
		b.WriteByte(']')
	case json.Number:
		b.WriteString(v.String())
	default:
		e := json.NewEncoder(b)
		e.SetEscapeHTML(false)
		_ = e.Encode(v)         // strings, bools and nil always encode
		b.Truncate(b.Len() - 1) // Encode's newline
	}
}
