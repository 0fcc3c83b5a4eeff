package keys

import (
	"crypto/rand"
	"strings"
)

// Prefix starts every relay key, so secret scanners and humans recognise one.
const Prefix = "sk-proxy-"

const (
	idLen     = 12
	secretLen = 40 // 40 base62 characters: 238 bits
	// KeyLen is the length of a whole plaintext key.
	KeyLen = len(Prefix) + idLen + secretLen
)

const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// Parse splits a plaintext key into its public id. It checks the prefix,
// the length and the alphabet, so malformed input is refused before any
// lookup. The error is always ErrInvalidKey.
func Parse(key string) (id string, err error) {
	if len(key) != KeyLen || !strings.HasPrefix(key, Prefix) {
		return "", ErrInvalidKey
	}
	body := key[len(Prefix):]
	for i := 0; i < len(body); i++ {
		if !isBase62(body[i]) {
			return "", ErrInvalidKey
		}
	}
	return body[:idLen], nil
}

// ValidID reports whether id has the form of a key id.
func ValidID(id string) bool {
	if len(id) != idLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if !isBase62(id[i]) {
			return false
		}
	}
	return true
}

func isBase62(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z'
}

// randomBase62 returns n uniformly random base62 characters from
// crypto/rand, rejecting bytes >= 248 so no character is more likely.
func randomBase62(n int) string {
	out := make([]byte, 0, n)
	var buf [64]byte
	for len(out) < n {
		_, _ = rand.Read(buf[:]) // crypto/rand.Read never fails (Go 1.24+)
		for _, b := range buf {
			if b >= 248 {
				continue
			}
			out = append(out, alphabet[b%62])
			if len(out) == n {
				break
			}
		}
	}
	return string(out)
}

// NewID returns a fresh random key id.
func NewID() string { return randomBase62(idLen) }

// Generate returns a new plaintext key for the given id.
func Generate(id string) string { return Prefix + id + randomBase62(secretLen) }

// Hint is the display form of a key: enough to tell keys apart, useless
// to an attacker.
func Hint(key string) string {
	if len(key) < 4 {
		return Prefix + "…"
	}
	id, err := Parse(key)
	if err != nil {
		return Prefix + "…" + key[len(key)-4:]
	}
	return Prefix + id + "…" + key[len(key)-4:]
}
