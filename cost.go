package relay

import "github.com/relaystation/relay/usage"

// cost prices a record by the model that answered (else the one asked),
// from its exact usage fields. A model the price table does not know is
// priced at the table's default and flagged: logged once per model (so
// the operator can add its price) and counted under the "other" model in
// metrics.
func (rl *Relay) cost(rec *usage.Record) float64 {
	model := rec.ResponseModel
	if model == "" {
		model = rec.Model
	}
	price, known := rl.pricing.Lookup(model)
	if !known && rec.Usage.Total() > 0 {
		if _, seen := rl.unpriced.LoadOrStore(model, true); !seen {
			rl.log.Warn("model not in the price table: priced at the default; add its price to the configuration",
				"model", model, "request_id", rec.RequestID)
		}
	}
	return price.Cost(rec.Usage)
}
