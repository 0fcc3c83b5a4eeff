package upstream

import (
	"math"
	"net/http"
	"time"
)

// AffinityKey returns the key that keeps a conversation on one upstream, so
// that its prompt cache stays warm: Claude Code's x-claude-code-session-id
// header, else the body's metadata.user_id, else fallback (the relay key's
// id, say).
func AffinityKey(h http.Header, userID, fallback string) string {
	if s := h.Get("X-Claude-Code-Session-Id"); s != "" {
		return s
	}
	if userID != "" {
		return userID
	}
	return fallback
}

// candidate is an upstream that may take a request now.
type candidate struct {
	m                   *member
	probeUp, probeModel bool
}

// blocked says why no upstream may take a request now.
type blocked struct {
	// served: some upstream serves the model; enabled: some enabled one does.
	served, enabled bool
	// wait is the shortest time until a cooling upstream gets its probe.
	wait time.Duration
	// busy: some upstream is at MaxConcurrent or has its probe in flight,
	// so one may free up at any moment.
	busy bool
}

// eligible appends to out the upstreams that may take c now. The caller
// holds p.mu.
func (p *Pool) eligible(c *Call, pin *member, now time.Time, out []candidate) ([]candidate, blocked) {
	var bl blocked
	for _, m := range p.members {
		if pin != nil && m != pin {
			continue
		}
		if !servesModel(m.globs, m.cfg.ModelMap, c.Model) {
			continue
		}
		bl.served = true
		if m.disabled != "" {
			continue
		}
		bl.enabled = true
		okU, probeU, waitU := m.brk.admits(now)
		okM, probeM, waitM := true, false, time.Duration(0)
		if c.Model != "" {
			if b := m.models[c.Model]; b != nil {
				okM, probeM, waitM = b.admits(now)
			}
		}
		if !okU || !okM {
			switch w := max(waitU, waitM); {
			case (!okU && waitU == 0) || (!okM && waitM == 0):
				bl.busy = true // a probe is in flight
			case bl.wait == 0 || w < bl.wait:
				bl.wait = w
			}
			continue
		}
		if m.cfg.MaxConcurrent > 0 && m.inflight >= m.cfg.MaxConcurrent {
			bl.busy = true
			continue
		}
		out = append(out, candidate{m: m, probeUp: probeU, probeModel: probeM})
	}
	return out, bl
}

// choose picks among the eligible upstreams: those the call has not tried
// yet if there are any; of them the highest priority; of that group the
// affinity key's upstream (weighted rendezvous hashing) or, without a key,
// the next by smooth weighted round robin, fewest in flight breaking ties.
// The caller holds p.mu.
func (p *Pool) choose(cands []candidate, tried []bool, key uint64, hasKey bool) candidate {
	if tried != nil {
		n := 0
		for _, c := range cands {
			if !tried[c.m.idx] {
				cands[n] = c
				n++
			}
		}
		if n > 0 {
			cands = cands[:n]
		}
	}
	top := cands[0].m.cfg.Priority
	for _, c := range cands[1:] {
		top = max(top, c.m.cfg.Priority)
	}
	n := 0
	for _, c := range cands {
		if c.m.cfg.Priority == top {
			cands[n] = c
			n++
		}
	}
	cands = cands[:n]
	if len(cands) == 1 {
		return cands[0]
	}
	if hasKey {
		best, bestScore := 0, math.Inf(-1)
		for i, c := range cands {
			if s := rendezvous(key, c.m); s > bestScore {
				best, bestScore = i, s
			}
		}
		return cands[best]
	}
	// Smooth weighted round robin (as nginx balances): every candidate
	// gains its weight, the richest is chosen and pays the total. Over any
	// run of picks the shares follow the weights closely, without bursts.
	total, best := 0, 0
	for i, c := range cands {
		c.m.current += c.m.weight
		total += c.m.weight
		b := cands[best].m
		if i > 0 && (c.m.current > b.current || c.m.current == b.current && c.m.inflight < b.inflight) {
			best = i
		}
	}
	cands[best].m.current -= total
	return cands[best]
}

// rendezvous is the weighted rendezvous (highest random weight) score of
// an upstream for an affinity key: -weight/ln(u) with u uniform in (0, 1)
// from the key and the name. The highest score wins, so a key stays with
// its upstream as long as that upstream is eligible, moves to its own
// second choice only while it is not, and never depends on which other
// upstreams exist. Every relay instance computes the same answer, so
// affinity holds behind a load balancer too.
func rendezvous(key uint64, m *member) float64 {
	h := mix64(key ^ m.nameHash)
	u := (float64(h>>11) + 0.5) / (1 << 53)
	return -float64(m.weight) / math.Log(u)
}

// hashString is 64-bit FNV-1a; fixed, unlike hash/maphash, so that every
// process hashes a key alike.
func hashString(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return mix64(h)
}

// mix64 is SplitMix64's finaliser: it spreads FNV's weak low bits.
func mix64(z uint64) uint64 {
	z ^= z >> 30
	z *= 0xbf58476d1ce4e5b9
	z ^= z >> 27
	z *= 0x94d049bb133111eb
	z ^= z >> 31
	return z
}
