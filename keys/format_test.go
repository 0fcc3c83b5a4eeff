package keys_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/relaystation/relay/keys"
)

func TestParse(t *testing.T) {
	id := "AbC123xyz789"
	secret := strings.Repeat("Z9a", 13) + "q" // 40 characters
	good := keys.Prefix + id + secret
	tests := []struct {
		name   string
		key    string
		wantID string
	}{
		{"valid", good, id},
		{"generated", keys.Generate("000000000000"), "000000000000"},
		{"empty", "", ""},
		{"prefix only", keys.Prefix, ""},
		{"wrong prefix", "sk-ant-" + id + secret + "xx", ""},
		{"prefix case", strings.ToUpper(keys.Prefix) + id + secret, ""},
		{"one short", good[:len(good)-1], ""},
		{"one long", good + "a", ""},
		{"dash in id", keys.Prefix + "AbC123-yz789" + secret, ""},
		{"underscore in secret", keys.Prefix + id + secret[:39] + "_", ""},
		{"non-ASCII", keys.Prefix + id + secret[:38] + "é", ""}, // é is two bytes: length matches
		{"space", keys.Prefix + id + " " + secret[1:], ""},
		{"NUL", keys.Prefix + id + "\x00" + secret[1:], ""},
		{"leading space", " " + good[:len(good)-1], ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := keys.Parse(tt.key)
			if tt.wantID == "" {
				if !errors.Is(err, keys.ErrInvalidKey) || got != "" {
					t.Fatalf("Parse(%q) = %q, %v; want ErrInvalidKey", tt.key, got, err)
				}
				return
			}
			if err != nil || got != tt.wantID {
				t.Fatalf("Parse(%q) = %q, %v; want %q", tt.key, got, err, tt.wantID)
			}
		})
	}
}

func TestValidID(t *testing.T) {
	for id, want := range map[string]bool{
		"AbC123xyz789":  true,
		"":              false,
		"AbC123xyz78":   false,
		"AbC123xyz7890": false,
		"AbC123xyz78-":  false,
		"../../etc/pas": false,
	} {
		if got := keys.ValidID(id); got != want {
			t.Errorf("ValidID(%q) = %v, want %v", id, got, want)
		}
	}
}

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

func TestGenerate(t *testing.T) {
	const n = 2000
	seen := make(map[string]bool, n)
	counts := make(map[rune]int)
	for range n {
		id := keys.NewID()
		if !keys.ValidID(id) {
			t.Fatalf("NewID() = %q, not a valid id", id)
		}
		k := keys.Generate(id)
		if len(k) != keys.KeyLen || !strings.HasPrefix(k, keys.Prefix+id) {
			t.Fatalf("Generate(%q) = %q: want %d characters starting with prefix and id", id, k, keys.KeyLen)
		}
		if got, err := keys.Parse(k); err != nil || got != id {
			t.Fatalf("Parse(Generate(%q)) = %q, %v", id, got, err)
		}
		if seen[k] {
			t.Fatalf("Generate repeated %q", k)
		}
		seen[k] = true
		for _, c := range k[len(keys.Prefix)+len(id):] {
			if !strings.ContainsRune(base62, c) {
				t.Fatalf("Generate produced %q outside base62", c)
			}
			counts[c]++
		}
	}
	// 80,000 secret characters: each of the 62 is expected ~1290 times. A
	// biased or truncated alphabet shows up as a missing or rare one; the
	// bounds are ~10 standard deviations wide, so they do not flake.
	for _, c := range base62 {
		if got := counts[c]; got < 900 || got > 1700 {
			t.Errorf("character %q appeared %d times in %d; want about 1290", c, got, n*40)
		}
	}
}

func TestHint(t *testing.T) {
	id := "AbC123xyz789"
	k := keys.Generate(id)
	h := keys.Hint(k)
	if h != keys.Prefix+id+"…"+k[len(k)-4:] {
		t.Fatalf("Hint = %q", h)
	}
	if strings.Contains(h, k[len(keys.Prefix)+len(id):len(k)-4]) {
		t.Fatalf("Hint %q reveals the secret", h)
	}
	for _, bad := range []string{"", "abc", "sk-proxy-short"} {
		if h := keys.Hint(bad); !strings.HasPrefix(h, keys.Prefix) {
			t.Errorf("Hint(%q) = %q", bad, h)
		}
	}
}
