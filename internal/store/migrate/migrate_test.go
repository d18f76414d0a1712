package migrate

import (
	"strings"
	"testing"
	"testing/fstest"
)

func TestLoad(t *testing.T) {
	tests := []struct {
		name    string
		files   map[string]string
		want    []string // names in order
		wantErr string
	}{
		{"ordered by version", map[string]string{"m/0010_b.sql": "B", "m/0002_a.sql": "A"}, []string{"0002_a.sql", "0010_b.sql"}, ""},
		{"empty dir", map[string]string{"m/.keep": ""}, nil, `".keep"`},
		{"no version", map[string]string{"m/init.sql": ""}, nil, `"init.sql": want NNNN_description.sql`},
		{"zero version", map[string]string{"m/0000_x.sql": ""}, nil, "want NNNN"},
		{"not sql", map[string]string{"m/0001_x.txt": ""}, nil, "want NNNN"},
		{"duplicate version", map[string]string{"m/0001_a.sql": "", "m/01_b.sql": ""}, nil, "share version 1"},
		{"missing dir", map[string]string{"other/0001_a.sql": ""}, nil, "migrations:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fsys := fstest.MapFS{}
			for p, c := range tt.files {
				fsys[p] = &fstest.MapFile{Data: []byte(c)}
			}
			got, err := Load(fsys, "m")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, f := range got {
				names = append(names, f.Name)
				if f.SQL != tt.files["m/"+f.Name] {
					t.Errorf("%s: SQL %q", f.Name, f.SQL)
				}
			}
			if strings.Join(names, ",") != strings.Join(tt.want, ",") {
				t.Errorf("got %v, want %v", names, tt.want)
			}
		})
	}
}
