package memory_test

import (
	"testing"

	"github.com/relaystation/relay/keys"
	"github.com/relaystation/relay/storage/memory"
	"github.com/relaystation/relay/storage/storagetest"
	"github.com/relaystation/relay/usage"
)

func TestKeysStore(t *testing.T) {
	storagetest.TestKeysStore(t, func(*testing.T) keys.Store { return memory.New() })
}

func TestUsageStore(t *testing.T) {
	storagetest.TestUsageStore(t, func(*testing.T) usage.Store { return memory.New() })
}
