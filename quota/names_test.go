package quota

import (
	"errors"
	"testing"
)

func TestOverrideFromMap(t *testing.T) {
	o, err := OverrideFromMap(map[string]int64{"rpm": 60, "daily_tokens": 0, "daily_cost_micros": 5_000_000})
	if err != nil {
		t.Fatal(err)
	}
	l := o.Apply(Limits{RPM: 10, DailyTokens: 100, TPM: 7})
	if l.RPM != 60 || l.DailyTokens != 0 || l.DailyCostMicros != 5_000_000 || l.TPM != 7 {
		t.Errorf("applied %+v", l)
	}
	for _, bad := range []map[string]int64{{"rpn": 1}, {"rpm": -1}} {
		if _, err := OverrideFromMap(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("%v: %v", bad, err)
		}
	}
	if len(Names()) != 10 {
		t.Errorf("names %v", Names())
	}
}
