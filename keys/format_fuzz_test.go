package keys

import (
	"strings"
	"testing"
)

// FuzzParse: Parse never panics, accepts exactly the well-formed keys, and
// the id it returns is the key's.
func FuzzParse(f *testing.F) {
	f.Add(Generate(NewID()))
	f.Add(Prefix)
	f.Add("sk-ant-api03-" + strings.Repeat("a", 40))
	f.Add(Prefix + strings.Repeat("é", 26))
	f.Add(Prefix + strings.Repeat("A", idLen+secretLen-1) + "/")
	f.Fuzz(func(t *testing.T, key string) {
		id, err := Parse(key)
		wellFormed := len(key) == KeyLen && strings.HasPrefix(key, Prefix) && strings.Trim(key[len(Prefix):], alphabet) == ""
		if (err == nil) != wellFormed {
			t.Fatalf("Parse(%q) = %v, well formed %v", key, err, wellFormed)
		}
		if err == nil && (id != key[len(Prefix):len(Prefix)+idLen] || !ValidID(id)) {
			t.Fatalf("id %q of %q", id, key)
		}
		if err != nil && err != ErrInvalidKey {
			t.Fatalf("error %v is not ErrInvalidKey", err)
		}
	})
}
