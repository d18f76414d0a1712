package main

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"

	"github.com/virtualkeys/sidecar/internal/pricing"
)

// checkConfigPrices validates config.yaml's model_list prices as the
// metering will use them (pricing.ValidateCustom), one error per bad
// model, each naming --config and the model.
func checkConfigPrices(file string, prices map[string]map[string]float64) error {
	var errs []error
	for _, model := range slices.Sorted(maps.Keys(prices)) {
		if err := pricing.ValidateCustom(map[string]map[string]float64{model: prices[model]}); err != nil {
			errs = append(errs, fmt.Errorf("--config %s: model_list model_name %q: %w", file, model, err))
		}
	}
	return errors.Join(errs...)
}

// customPrices is what the metering prices on top of the price table:
// config.yaml's model_list prices (keyed by model_name, the model group a
// client asks for) with --custom-prices-file's over them. Flags and
// environment override config.yaml, key by key: a cost key the file sets
// for a model replaces config.yaml's, the keys it leaves out keep
// config.yaml's (so a file that only changes an input price does not drop
// the output price to the table's, or to nothing), and a model in only one
// of the two is taken as it is. nil when neither sets a price.
func customPrices(cfg *Config) (map[string]map[string]float64, error) {
	var fromConfig map[string]map[string]float64
	if cfg.LiteLLM != nil {
		fromConfig = cfg.LiteLLM.Prices
		if err := checkConfigPrices(cfg.ConfigFile, fromConfig); err != nil {
			return nil, err
		}
	}
	var fromFile map[string]map[string]float64
	if cfg.CustomPricesFile != "" {
		b, err := os.ReadFile(cfg.CustomPricesFile)
		if err != nil {
			return nil, fmt.Errorf("--custom-prices-file: %w", err)
		}
		if fromFile, err = pricing.ParseCustom(b); err != nil {
			return nil, fmt.Errorf("--custom-prices-file %s: %w", cfg.CustomPricesFile, err)
		}
	}
	return mergePrices(fromConfig, fromFile), nil
}

// mergePrices lays over on top of base, cost key by cost key, without
// changing either. nil when both are empty.
func mergePrices(base, over map[string]map[string]float64) map[string]map[string]float64 {
	if len(base) == 0 && len(over) == 0 {
		return nil
	}
	out := make(map[string]map[string]float64, len(base)+len(over))
	for model, prices := range base {
		out[model] = maps.Clone(prices)
	}
	for model, prices := range over {
		if out[model] == nil {
			out[model] = make(map[string]float64, len(prices))
		}
		maps.Copy(out[model], prices)
	}
	return out
}
