package main

import (
	"strings"
	"testing"
)

// FuzzConfigYAML: any file content is either accepted or refused with an
// error; never a panic, and an error never quotes a credential.
func FuzzConfigYAML(f *testing.F) {
	f.Add([]byte("listen_addr: \":9000\"\ntiers: {default: free, tiers: {free: {rpm: 5}}}\n"))
	f.Add([]byte("upstreams:\n  - name: a\n    base_url: https://a\n    credential: sk-secret-1\n    auth: bearer\n"))
	f.Add([]byte("quota: {timezone: Asia/Shanghai, counted: \"input,output\"}\npricing: {models: {m: {input: 1}}}\n"))
	f.Add([]byte("shutdown_grace: [\n"))
	f.Add([]byte("upstreams: [{credential: [sk-secret-1]}]\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c := defaults()
		if err := c.parseYAML(b); err != nil {
			if strings.Contains(err.Error(), "sk-secret-1") {
				t.Fatalf("error quotes a credential: %v", err)
			}
			return
		}
		c.UpstreamAPIKey = "k"
		_ = c.validate()
		_ = c.pricing()
		_ = c.upstreams()
	})
}
