// Package jsongrammar converts a JSON Schema into a GBNF grammar for
// llama.cpp's grammar sampler, with the semantics llama.cpp documents for
// its own converter (grammars/README.md in its source), which llama-server
// applies to json_schema and response_format:
//
//   - objects allow no properties beyond those listed unless
//     additionalProperties says so, and are generated with the required
//     properties first, then the optional ones, each in the order written;
//   - minimum and maximum bound integers only;
//   - string patterns must be anchored, ^...$;
//   - keywords the converter does not know are ignored, an unknown type
//     or a malformed schema is an error.
//
// Whitespace goes where llama.cpp's grammars allow it: after an opening
// bracket, a colon or a comma, and before a closing bracket; a key's
// closing quote may be followed by some before its colon.
package jsongrammar

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// FromSchema converts a JSON Schema to a GBNF grammar whose start rule is
// root.
func FromSchema(schema []byte) (string, error) {
	s, err := decode(schema)
	if err != nil {
		return "", fmt.Errorf("json schema: %w", err)
	}
	c := &converter{root: s, rules: map[string]string{}, refs: map[string]string{}}
	c.rules["space"] = spaceRule
	r, err := c.visit(s, "root")
	if err != nil {
		return "", err
	}
	if r != "root" { // a built-in rule or a reference
		c.rules["root"] = r
	}
	return c.grammar(), nil
}

// spaceRule is the whitespace allowed after every value: none, a space,
// or up to two newlines and an indent.
const spaceRule = `| " " | "\n"{1,2} [ \t]{0,20}`

// builtins are the rules of JSON's own values, and of the string formats;
// a rule names the others it uses.
var builtins = map[string]struct {
	body string
	uses []string
}{
	"boolean":       {`("true" | "false")`, nil},
	"null":          {`"null"`, nil},
	"integral-part": {`[0] | [1-9] [0-9]{0,15}`, nil},
	"decimal-part":  {`[0-9]{1,16}`, nil},
	"integer":       {`("-"? integral-part)`, []string{"integral-part"}},
	"number":        {`("-"? integral-part) ("." decimal-part)? ([eE] [-+]? integral-part)?`, []string{"integral-part", "decimal-part"}},
	"char":          {`[^"\\\x7F\x00-\x1F] | [\\] (["\\bfnrt] | "u" [0-9a-fA-F]{4})`, nil},
	"string":        {`"\"" char* "\""`, []string{"char"}},
	"object":        {`"{" space ( string ":" space value ("," space string ":" space value)* )? space "}"`, []string{"string", "value"}},
	"array":         {`"[" space ( value ("," space value)* )? space "]"`, []string{"value"}},
	"value":         {`object | array | string | number | boolean | null`, []string{"object", "array", "string", "number", "boolean", "null"}},
	"date":          {`[0-9]{4} "-" ( "0" [1-9] | "1" [0-2] ) "-" ( "0" [1-9] | [1-2] [0-9] | "3" [0-1] )`, nil},
	"time":          {`([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9] ":" [0-5] [0-9] ( "." [0-9]{3} )? ( "Z" | ( "+" | "-" ) ( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] )`, nil},
	"date-time":     {`date "T" time`, []string{"date", "time"}},
	"uuid":          {`[0-9a-fA-F]{8} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{12}`, nil},
}

// converter holds the rules made so far.
type converter struct {
	root  any
	rules map[string]string
	// refs maps a $ref to the rule made for its target.
	refs map[string]string
}

// grammar is the rules, root first, then by name.
func (c *converter) grammar() string {
	names := make([]string, 0, len(c.rules))
	for n := range c.rules {
		if n != "root" {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	var b strings.Builder
	for _, n := range append([]string{"root"}, names...) {
		fmt.Fprintf(&b, "%s ::= %s\n", n, c.rules[n])
	}
	return b.String()
}

// builtin adds a built-in rule and those it uses, and returns its name.
func (c *converter) builtin(name string) string {
	if _, ok := c.rules[name]; ok {
		return name
	}
	r := builtins[name]
	c.rules[name] = r.body
	for _, u := range r.uses {
		c.builtin(u)
	}
	return name
}

var notRuleChars = regexp.MustCompile(`[^a-zA-Z0-9-]+`)

// add makes a rule named after name (made safe, and unique unless an
// identical rule exists) and returns the name it got.
func (c *converter) add(name, body string) string {
	name = notRuleChars.ReplaceAllString(name, "-")
	if _, reserved := builtins[name]; reserved || name == "space" {
		name += "-"
	}
	key := name
	for i := 0; ; i++ {
		if i > 0 {
			key = name + strconv.Itoa(i)
		}
		old, taken := c.rules[key]
		if !taken || old == body {
			c.rules[key] = body
			return key
		}
	}
}

// visit makes the rule for schema s, named after name, and returns the
// rule's name.
func (c *converter) visit(s any, name string) (string, error) {
	if b, ok := s.(bool); ok {
		if !b {
			return "", errors.New("json schema: the schema false matches no value")
		}
		return c.visit(&object{vals: map[string]any{}}, name)
	}
	o, ok := s.(*object)
	if !ok {
		return "", fmt.Errorf("json schema: a schema must be an object, not %s", encode(s))
	}
	if ref, ok := o.get("$ref"); ok {
		return c.ref(ref)
	}
	if alts, ok := firstOf(o, "oneOf", "anyOf"); ok {
		list, ok := alts.([]any)
		if !ok || len(list) == 0 {
			return "", errors.New("json schema: oneOf and anyOf take a non-empty list of schemas")
		}
		return c.alternatives(list, name)
	}
	if all, ok := o.get("allOf"); ok {
		return c.allOf(all, name)
	}
	if v, ok := o.get("const"); ok {
		return c.add(name, literal(encode(v))), nil
	}
	if v, ok := o.get("enum"); ok {
		list, ok := v.([]any)
		if !ok || len(list) == 0 {
			return "", errors.New("json schema: enum takes a non-empty list of values")
		}
		alts := make([]string, len(list))
		for i, e := range list {
			alts[i] = literal(encode(e))
		}
		return c.add(name, "("+strings.Join(alts, " | ")+")"), nil
	}
	typ, hasType := o.get("type")
	if types, ok := typ.([]any); ok {
		alts := make([]any, len(types))
		for i, t := range types {
			one := &object{keys: slices.Clone(o.keys), vals: map[string]any{}}
			for k, v := range o.vals {
				one.vals[k] = v
			}
			one.vals["type"] = t
			alts[i] = one
		}
		return c.alternatives(alts, name)
	}
	t, isString := typ.(string)
	if hasType && !isString {
		return "", fmt.Errorf("json schema: type %s is neither a type's name nor a list of them", encode(typ))
	}
	_, hasProps := o.get("properties")
	_, hasAdditional := o.get("additionalProperties")
	_, hasItems := o.get("items")
	_, hasPrefix := o.get("prefixItems")
	_, hasFormat := o.get("format")
	_, hasPattern := o.get("pattern")
	switch {
	case t == "object" || (!hasType && (hasProps || hasAdditional)):
		return c.object(o, name)
	case t == "array" || (!hasType && (hasItems || hasPrefix)):
		return c.array(o, name)
	case t == "string" || (!hasType && (hasFormat || hasPattern)):
		return c.stringRule(o, name)
	case t == "integer":
		return c.integer(o, name)
	case t == "number", t == "boolean", t == "null":
		return c.builtin(t), nil
	case !hasType:
		return c.builtin("value"), nil
	}
	return "", fmt.Errorf("json schema: unknown type %q", t)
}

// firstOf is the first of keys that o has.
func firstOf(o *object, keys ...string) (any, bool) {
	for _, k := range keys {
		if v, ok := o.get(k); ok {
			return v, true
		}
	}
	return nil, false
}

// alternatives is a rule matching any of schemas.
func (c *converter) alternatives(schemas []any, name string) (string, error) {
	alts, err := c.visitAll(schemas, name)
	if err != nil {
		return "", err
	}
	return c.add(name, strings.Join(alts, " | ")), nil
}

// visitAll makes the rules of schemas, named prefix-0, prefix-1, ...
func (c *converter) visitAll(schemas []any, prefix string) ([]string, error) {
	rules := make([]string, len(schemas))
	for i, s := range schemas {
		r, err := c.visit(s, fmt.Sprintf("%s-%d", prefix, i))
		if err != nil {
			return nil, err
		}
		rules[i] = r
	}
	return rules, nil
}

// ref is the rule for a local reference ("#", "#/$defs/x", any JSON
// pointer into the schema), made once, so that recursive schemas work.
func (c *converter) ref(v any) (string, error) {
	ref, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("json schema: $ref %s is not a string", encode(v))
	}
	if r, ok := c.refs[ref]; ok {
		return r, nil
	}
	target, err := c.resolve(ref)
	if err != nil {
		return "", err
	}
	name := ref[strings.LastIndex(ref, "/")+1:]
	if name == "" || name == "#" {
		name = "ref"
	}
	// Reserve the name first, with a body no rule has (two references
	// may end in the same name): the target may refer to itself.
	rule := c.add(name, "\x00"+ref)
	c.refs[ref] = rule
	got, err := c.visit(target, rule+"-def")
	if err != nil {
		return "", err
	}
	c.rules[rule] = got
	return rule, nil
}

// resolve follows a local JSON pointer from the schema's root.
func (c *converter) resolve(ref string) (any, error) {
	if !strings.HasPrefix(ref, "#") {
		return nil, fmt.Errorf("json schema: $ref %q: only references within the schema (#/...) are supported", ref)
	}
	cur := c.root
	for _, part := range strings.Split(strings.TrimPrefix(ref[1:], "/"), "/") {
		if part == "" {
			continue
		}
		part = strings.ReplaceAll(strings.ReplaceAll(part, "~1", "/"), "~0", "~")
		switch v := cur.(type) {
		case *object:
			next, ok := v.get(part)
			if !ok {
				return nil, fmt.Errorf("json schema: $ref %q: no %q in the schema", ref, part)
			}
			cur = next
		case []any:
			i, err := strconv.Atoi(part)
			if err != nil || i < 0 || i >= len(v) {
				return nil, fmt.Errorf("json schema: $ref %q: no item %q in the schema", ref, part)
			}
			cur = v[i]
		default:
			return nil, fmt.Errorf("json schema: $ref %q does not point into the schema", ref)
		}
	}
	return cur, nil
}

// allOf is the rule for an allOf, as llama.cpp reads one: the
// intersection of its enums when its members are enums; else an object
// of its members' properties, required when a member gives them directly
// and optional when a member's anyOf does.
func (c *converter) allOf(v any, name string) (string, error) {
	list, ok := v.([]any)
	if !ok || len(list) == 0 {
		return "", errors.New("json schema: allOf takes a non-empty list of schemas")
	}
	props := &object{vals: map[string]any{}}
	var required []any
	var enumOrder []string
	enumCount := map[string]int{}
	var add func(s any, req bool, seen map[string]bool) error
	add = func(s any, req bool, seen map[string]bool) error {
		o, ok := s.(*object)
		if !ok {
			return errors.New("json schema: allOf's schemas must be objects")
		}
		if ref, ok := o.get("$ref"); ok {
			r, isString := ref.(string)
			if !isString {
				return fmt.Errorf("json schema: $ref %s is not a string", encode(ref))
			}
			if seen[r] {
				return fmt.Errorf("json schema: $ref %q refers to itself with nothing in between", r)
			}
			seen[r] = true
			target, err := c.resolve(r)
			if err != nil {
				return err
			}
			return add(target, req, seen)
		}
		if p, ok := o.get("properties"); ok {
			po, ok := p.(*object)
			if !ok {
				return errors.New("json schema: properties must be an object")
			}
			for _, k := range po.keys {
				if _, dup := props.vals[k]; dup {
					continue
				}
				props.keys = append(props.keys, k)
				props.vals[k] = po.vals[k]
				if req {
					required = append(required, k)
				}
			}
		}
		if e, ok := o.get("enum"); ok {
			values, _ := e.([]any)
			seen := map[string]bool{}
			for _, v := range values {
				lit := literal(encode(v))
				if seen[lit] {
					continue
				}
				seen[lit] = true
				if enumCount[lit] == 0 {
					enumOrder = append(enumOrder, lit)
				}
				enumCount[lit]++
			}
		}
		return nil
	}
	for _, s := range list {
		if o, ok := s.(*object); ok {
			if alts, ok := o.get("anyOf"); ok {
				altList, _ := alts.([]any)
				for _, alt := range altList {
					if err := add(alt, false, map[string]bool{}); err != nil {
						return "", err
					}
				}
				continue
			}
		}
		if err := add(s, true, map[string]bool{}); err != nil {
			return "", err
		}
	}
	var common []string
	for _, lit := range enumOrder {
		if enumCount[lit] == len(list) {
			common = append(common, lit)
		}
	}
	if len(common) > 0 {
		return c.add(name, "("+strings.Join(common, " | ")+")"), nil
	}
	merged := &object{keys: []string{"type", "properties", "required"},
		vals: map[string]any{"type": "object", "properties": props, "required": required}}
	return c.object(merged, name)
}

// object is the rule for an object schema: its properties, required ones
// first, and the additional ones it allows.
func (c *converter) object(o *object, name string) (string, error) {
	props := &object{vals: map[string]any{}}
	if p, ok := o.get("properties"); ok {
		if props, ok = p.(*object); !ok {
			return "", errors.New("json schema: properties must be an object")
		}
	}
	required := map[string]bool{}
	if r, ok := o.get("required"); ok {
		list, ok := r.([]any)
		if !ok {
			return "", errors.New("json schema: required must be a list of property names")
		}
		for _, e := range list {
			s, ok := e.(string)
			if !ok {
				return "", errors.New("json schema: required must be a list of property names")
			}
			required[s] = true
		}
	}
	additional, hasAdditional := o.get("additionalProperties")
	if len(props.keys) == 0 && (!hasAdditional || additional == true) {
		return c.builtin("object"), nil // any object
	}
	var req, opt []string
	for _, k := range props.keys {
		r, err := c.visit(props.vals[k], name+"-"+k)
		if err != nil {
			return "", err
		}
		kv := c.add(name+"-"+k+"-kv", literal(encode(k))+` space ":" space `+r)
		if required[k] {
			req = append(req, kv)
		} else {
			opt = append(opt, kv)
		}
	}
	extra := ""
	if hasAdditional && additional != false {
		var value string
		if additional == true {
			value = c.builtin("value")
		} else {
			var err error
			if value, err = c.visit(additional, name+"-additional-value"); err != nil {
				return "", err
			}
		}
		names := &keyTrie{}
		for _, k := range props.keys {
			q := encode(k)
			names.insert(q[1 : len(q)-1])
		}
		key := c.builtin("string")
		if len(props.keys) > 0 {
			key = c.add(name+"-additional-k", `"\"" `+c.notKeys(names)+` "\""`)
		}
		extra = c.add(name+"-additional-kv", key+` ":" space `+value)
	}
	// The optional properties follow the required ones in order, each
	// there or not, then any additional ones.
	var tail []string
	for _, kv := range opt {
		tail = append(tail, `( "," space `+kv+` )?`)
	}
	if extra != "" {
		tail = append(tail, `( "," space `+extra+` )*`)
	}
	body := `"{" space `
	switch {
	case len(req) == 0 && len(tail) == 0:
		return c.add(name, `"{" space "}"`), nil
	case len(req) > 0:
		body += strings.Join(req, ` "," space `) + " " + strings.Join(tail, " ")
	default:
		// Nothing required: the first member present has no comma.
		var firsts []string
		for i, kv := range opt {
			firsts = append(firsts, strings.TrimSpace(kv+" "+strings.Join(tail[i+1:], " ")))
		}
		if extra != "" {
			firsts = append(firsts, extra+" "+tail[len(tail)-1])
		}
		body += "( " + strings.Join(firsts, " | ") + " )?"
	}
	return c.add(name, strings.TrimSpace(body)+` space "}"`), nil
}

// array is the rule for an array schema: a tuple (items or prefixItems
// as a list), or a list of one item schema between minItems and maxItems.
func (c *converter) array(o *object, name string) (string, error) {
	items, hasItems := o.get("items")
	if prefix, ok := o.get("prefixItems"); ok {
		if _, tuple := prefix.([]any); tuple || !hasItems {
			items, hasItems = prefix, true // an object: the items' schema
		}
	}
	if tuple, ok := items.([]any); ok {
		parts, err := c.visitAll(tuple, name+"-tuple")
		if err != nil {
			return "", err
		}
		return c.add(name, `"[" space `+strings.Join(parts, ` "," space `)+` space "]"`), nil
	}
	var item string
	if hasItems {
		var err error
		if item, err = c.visit(items, name+"-item"); err != nil {
			return "", err
		}
	} else {
		item = c.builtin("value")
	}
	lo, hi, err := bounds(o, "minItems", "maxItems")
	if err != nil {
		return "", err
	}
	if hi >= 0 && hi < lo {
		return "", fmt.Errorf("json schema: maxItems %d is below minItems %d", hi, lo)
	}
	return c.add(name, `"[" space `+list(item, `"," space`, lo, hi)+` space "]"`), nil
}

// list is item repeated lo to hi times (hi < 0: no limit), sep between.
func list(item, sep string, lo, hi int) string {
	if hi == 0 {
		return ""
	}
	rest := repeat(max(lo-1, 0), hi-1)
	if hi < 0 {
		rest = repeat(max(lo-1, 0), -1)
	}
	body := item + " ( " + sep + " " + item + " )" + rest
	if lo == 0 {
		return "( " + body + " )?"
	}
	return body
}

// repeat is GBNF's repetition of lo to hi (hi < 0: no limit).
func repeat(lo, hi int) string {
	switch {
	case hi < 0 && lo == 0:
		return "*"
	case hi < 0 && lo == 1:
		return "+"
	case hi < 0:
		return fmt.Sprintf("{%d,}", lo)
	case lo == 0 && hi == 1:
		return "?"
	case lo == hi:
		return fmt.Sprintf("{%d}", lo)
	}
	return fmt.Sprintf("{%d,%d}", lo, hi)
}

// bounds reads two non-negative integer keywords (-1 when absent).
func bounds(o *object, minKey, maxKey string) (lo, hi int, err error) {
	lo, hi = 0, -1
	for _, k := range []struct {
		key string
		to  *int
	}{{minKey, &lo}, {maxKey, &hi}} {
		v, ok := o.get(k.key)
		if !ok {
			continue
		}
		n, isNum := v.(json.Number)
		i, err := n.Int64()
		if !isNum || err != nil || i < 0 || i > math.MaxInt32 {
			return 0, 0, fmt.Errorf("json schema: %s must be a non-negative integer, not %s", k.key, encode(v))
		}
		*k.to = int(i)
	}
	return lo, hi, nil
}

// stringRule is the rule for a string schema: a pattern, a format, or
// characters between minLength and maxLength.
func (c *converter) stringRule(o *object, name string) (string, error) {
	if p, ok := o.get("pattern"); ok {
		pattern, ok := p.(string)
		if !ok {
			return "", errors.New("json schema: pattern must be a string")
		}
		body, err := patternRule(pattern)
		var unsupported unsupportedError
		switch {
		case errors.As(err, &unsupported):
			// As llama.cpp: any string, rather than no answer.
			return c.builtin("string"), nil
		case err != nil:
			return "", fmt.Errorf("json schema: pattern %q: %w", pattern, err)
		}
		return c.add(name, `"\"" `+body+` "\""`), nil
	}
	if f, ok := o.get("format"); ok {
		switch f {
		case "date", "time", "date-time", "uuid":
			return c.add(f.(string)+"-string", `"\"" `+c.builtin(f.(string))+` "\""`), nil
		}
	}
	lo, hi, err := bounds(o, "minLength", "maxLength")
	if err != nil {
		return "", err
	}
	if lo == 0 && hi < 0 {
		return c.builtin("string"), nil
	}
	if hi >= 0 && hi < lo {
		return "", fmt.Errorf("json schema: maxLength %d is below minLength %d", hi, lo)
	}
	return c.add(name, `"\"" `+c.builtin("char")+repeat(lo, hi)+` "\""`), nil
}

// literal is s as a GBNF string literal.
func literal(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		default:
			if r < 0x20 || r == 0x7f {
				fmt.Fprintf(&b, `\x%02X`, r)
			} else {
				b.WriteRune(r)
			}
		}
	}
	b.WriteByte('"')
	return b.String()
}

// keyTrie is a trie of property names, as their JSON text between the
// quotes.
type keyTrie struct {
	next map[rune]*keyTrie
	end  bool
}

func (k *keyTrie) insert(s string) {
	n := k
	for _, r := range s {
		if n.next == nil {
			n.next = map[rune]*keyTrie{}
		}
		if n.next[r] == nil {
			n.next[r] = &keyTrie{}
		}
		n = n.next[r]
	}
	n.end = true
}

// notKeys is a GBNF expression for a JSON string's contents that are none
// of the names in k: an additional property never repeats a listed one.
func (c *converter) notKeys(k *keyTrie) string {
	var alts []string
	runes := make([]rune, 0, len(k.next))
	for r := range k.next {
		runes = append(runes, r)
	}
	slices.Sort(runes)
	class := `[^"\\`
	escapes := true
	for _, r := range runes {
		alts = append(alts, strings.TrimSpace(literal(string(r))+" "+c.notKeys(k.next[r])))
		class += classChar(r)
		if r == '\\' {
			escapes = false // the names' own escapes lead there
		}
	}
	char := c.builtin("char")
	alts = append(alts, class+"] "+char+"*")
	if escapes {
		alts = append(alts, `[\\] (["\\bfnrt] | "u" [0-9a-fA-F]{4}) `+char+"*")
	}
	expr := "(" + strings.Join(alts, " | ") + ")"
	if !k.end {
		expr += "?" // a prefix of names, not a name
	}
	return expr
}
