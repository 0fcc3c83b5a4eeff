package quota

import (
	"fmt"
	"sort"
	"strings"
)

// Names lists the limit names used in configuration, in key records'
// overrides and in the admin API.
func Names() []string {
	var l Limits
	fs := l.fields()
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = f.name
	}
	return out
}

// OverrideFromMap builds an Override from limit names and values, as a
// key record keeps them. An unknown name or a negative value is an error
// naming it.
func OverrideFromMap(m map[string]int64) (Override, error) {
	var o Override
	if len(m) == 0 {
		return o, nil
	}
	var l Limits
	lf := l.fields()
	of := o.fields()
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		v := m[n]
		i := -1
		for j, f := range lf {
			if f.name == n {
				i = j
				break
			}
		}
		if i < 0 {
			return Override{}, fmt.Errorf("%w: unknown limit %q (known: %s)", ErrInvalid, n, strings.Join(Names(), ", "))
		}
		if v < 0 {
			return Override{}, fmt.Errorf("%w: %s: must not be negative", ErrInvalid, n)
		}
		*of[i] = &v
	}
	return o, nil
}
