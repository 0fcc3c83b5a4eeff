package main

import (
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	// comm may hold spaces and parentheses; fields count from the last ')'.
	line := "4242 (load (test) x) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 8 0 100 1000 10"
	cpu, err := parseStat(line)
	if err != nil {
		t.Fatal(err)
	}
	if want := 300 * time.Second / clockTicks; cpu != want {
		t.Errorf("cpu = %v, want %v", cpu, want)
	}
	if _, err := parseStat("garbage"); err == nil {
		t.Error("parseStat(garbage) did not fail")
	}
}
