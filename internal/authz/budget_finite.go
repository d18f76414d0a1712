package authz

import "math"

// overBudget is the budget step's comparison. A spend or budget that is not
// a finite number (NaN or ±Inf written into the database by SQL) counts as
// over budget: IEEE comparisons with NaN are all false, so `spend >= max`
// alone would let such a key through (Postgres itself holds 'NaN' >= x).
func overBudget(spend, max float64) bool {
	if math.IsNaN(spend) || math.IsNaN(max) || math.IsInf(spend, 0) || math.IsInf(max, 0) {
		return true
	}
	return spend >= max
}
