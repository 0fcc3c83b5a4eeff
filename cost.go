package relay

import "github.com/relaystation/relay/usage"

// cost prices a record by the model that answered (else the one asked),
// from its exact usage fields.
func (rl *Relay) cost(rec *usage.Record) float64 {
	model := rec.ResponseModel
	if model == "" {
		model = rec.Model
	}
	price, _ := rl.pricing.Lookup(model)
	return price.Cost(rec.Usage)
}
