package sqlite_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/store"
	"github.com/virtualkeys/sidecar/internal/store/sqlite"
)

func ExampleOpen() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "sidecar")
	defer os.RemoveAll(dir)

	st, err := sqlite.Open(ctx, filepath.Join(dir, "keys.db"), nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer st.Close()

	unsubscribe := st.Subscribe(func(e store.Event) {
		switch e.Kind {
		case store.EventReset:
			fmt.Println("reset")
		case store.EventChanged:
			fmt.Println("changed", keys.Redact(e.Token))
		case store.EventSpend:
			fmt.Println("spend", keys.Redact(e.Token), e.Spend)
		}
	})
	defer unsubscribe()

	raw := "sk-example-key-0000000001"
	name := keys.Name(raw)
	if err := st.Create(ctx, &keys.Key{Token: keys.HashHex(raw), KeyName: &name}); err != nil {
		fmt.Println(err)
		return
	}
	if err := st.AddSpend(ctx, map[string]float64{keys.HashHex(raw): 0.25}); err != nil {
		fmt.Println(err)
		return
	}
	k, err := st.Lookup(ctx, keys.Ref(raw))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(*k.KeyName, k.Spend)
	// Output:
	// reset
	// changed 4cb402aea88b
	// spend 4cb402aea88b 0.25
	// sk-...0001 0.25
}
