package main

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/virtualkeys/sidecar/internal/ratelimit"
)

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestParseConfigDefaultsAndPrecedence(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		env   map[string]string
		check func(t *testing.T, c *Config)
	}{
		{"defaults", nil, nil, func(t *testing.T, c *Config) {
			want := Config{DataDir: "./data", GRPCAddr: "127.0.0.1:9001", HTTPAddr: "127.0.0.1:4000", LogFormat: "json",
				CacheMaxKeys: 100000, NegativeTTL: 5 * time.Second, CacheTTL: 5 * time.Minute, LookupTimeout: 500 * time.Millisecond,
				IdentityHeaderPrefix: "x-litellm-", MaxBodyBytes: 1 << 20, BudgetResetInterval: time.Minute, ShutdownTimeout: 15 * time.Second,
				DecisionLog: "off", DecisionLogSample: 0.01, GRPCMetrics: true, FeedHeartbeat: 5 * time.Second,
				MgmtTimeout: 10 * time.Second, DBStatementTimeout: 5 * time.Second,
				CacheMaxLoads: 64, CacheUnknownRate: 20, FeedStaleBound: 30 * time.Second,
				SpendFlushInterval: time.Second, SpendMaxPendingLogs: 100000, InjectIncludeUsage: true,
				RateLimitWindow: time.Minute, RateLimitLeaseTimeout: 10 * time.Minute, RedisTimeout: 100 * time.Millisecond, RedisKeyPrefix: "vk:"}
			if !reflect.DeepEqual(*c, want) {
				t.Errorf("got %+v\nwant %+v", *c, want)
			}
		}},
		{"env fallback", nil, map[string]string{
			"SIDECAR_MASTER_KEY": "sk-env", "DATABASE_URL": "postgres://u@db:5432/x", "SIDECAR_DATA_DIR": "/tmp/d",
			"SIDECAR_GRPC_ADDR": "unix:///run/s.sock", "SIDECAR_HTTP_ADDR": ":8080", "SIDECAR_LOG_LEVEL": "debug",
			"SIDECAR_NEGATIVE_TTL": "2s", "SIDECAR_TRUST_FORWARDED": "true", "SIDECAR_KEY_HEADER": "X-My-Key",
		}, func(t *testing.T, c *Config) {
			if c.MasterKey != "sk-env" || c.DatabaseURL != "postgres://u@db:5432/x" || c.DataDir != "/tmp/d" ||
				c.GRPCAddr != "unix:///run/s.sock" || c.HTTPAddr != ":8080" || c.LogLevel.String() != "DEBUG" ||
				c.NegativeTTL != 2*time.Second || !c.TrustForwarded || c.KeyHeader != "x-my-key" {
				t.Errorf("env not applied: %+v", *c)
			}
		}},
		{"litellm master key fallback", nil, map[string]string{"LITELLM_MASTER_KEY": "sk-litellm"}, func(t *testing.T, c *Config) {
			if c.MasterKey != "sk-litellm" {
				t.Errorf("MasterKey = %q", c.MasterKey)
			}
		}},
		{"sidecar master key wins over litellm's", nil, map[string]string{"LITELLM_MASTER_KEY": "sk-l", "SIDECAR_MASTER_KEY": "sk-s"}, func(t *testing.T, c *Config) {
			if c.MasterKey != "sk-s" {
				t.Errorf("MasterKey = %q", c.MasterKey)
			}
		}},
		{"flag wins over env", []string{"--master-key=sk-flag", "--http-addr", "127.0.0.1:4001", "--negative-ttl=1s"},
			map[string]string{"SIDECAR_MASTER_KEY": "sk-env", "SIDECAR_HTTP_ADDR": "127.0.0.1:9999", "SIDECAR_NEGATIVE_TTL": "9s"},
			func(t *testing.T, c *Config) {
				if c.MasterKey != "sk-flag" || c.HTTPAddr != "127.0.0.1:4001" || c.NegativeTTL != time.Second {
					t.Errorf("flags not preferred: %+v", *c)
				}
			}},
		{"rate limits from env", nil, map[string]string{"LITELLM_RATE_LIMIT_WINDOW_SIZE": "30", "SIDECAR_TOKEN_RATE_LIMIT_TYPE": "total",
			"REDIS_URL": "redis://:pw@127.0.0.1:6379/2", "SIDECAR_REDIS_KEY_PREFIX": "p:"}, func(t *testing.T, c *Config) {
			if c.RateLimitWindow != 30*time.Second || c.TokenRateLimitType != ratelimit.TokensTotal || c.RedisURL != "redis://:pw@127.0.0.1:6379/2" || c.RedisKeyPrefix != "p:" {
				t.Errorf("rate-limit env not applied: %+v", *c)
			}
		}},
		{"sidecar window wins over litellm's", nil, map[string]string{"LITELLM_RATE_LIMIT_WINDOW_SIZE": "30", "SIDECAR_RATE_LIMIT_WINDOW_SIZE": "5"}, func(t *testing.T, c *Config) {
			if c.RateLimitWindow != 5*time.Second {
				t.Errorf("window %s", c.RateLimitWindow)
			}
		}},
		{"webhook URLs", []string{"--webhook-url", " http://a.example/h , https://b.example/x ", "--webhook-secret", "s"}, nil, func(t *testing.T, c *Config) {
			if want := []string{"http://a.example/h", "https://b.example/x"}; !reflect.DeepEqual(c.WebhookURLs, want) || c.WebhookSecret != "s" {
				t.Errorf("WebhookURLs %q secret %q", c.WebhookURLs, c.WebhookSecret)
			}
		}},
		{"feed url and verify-only", []string{"--master-key", "sk-m", "--database-url", "postgres://h/db", "--feed-database-url", "postgres://direct/db", "--migrate=false"}, nil, func(t *testing.T, c *Config) {
			if c.FeedDatabaseURL != "postgres://direct/db" || !c.NoMigrate {
				t.Errorf("feed url %q, no-migrate %v", c.FeedDatabaseURL, c.NoMigrate)
			}
		}},
		{"SIDECAR_MIGRATE=false", nil, map[string]string{"SIDECAR_MIGRATE": "false", "SIDECAR_FEED_HEARTBEAT": "2s"}, func(t *testing.T, c *Config) {
			if !c.NoMigrate || c.FeedHeartbeat != 2*time.Second {
				t.Errorf("no-migrate %v, heartbeat %v", c.NoMigrate, c.FeedHeartbeat)
			}
		}},
		{"postgresql scheme", []string{"--master-key", "sk-m", "--database-url", "postgresql://postgres@127.0.0.1:5432/test?sslmode=disable"}, nil, func(t *testing.T, c *Config) {
			if c.DatabaseURL == "" {
				t.Error("DatabaseURL empty")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseConfig(tt.args, envOf(tt.env), &bytes.Buffer{})
			if err != nil {
				t.Fatalf("parseConfig: %v", err)
			}
			tt.check(t, c)
		})
	}
}

func TestParseConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want []string // substrings the one error message must contain
	}{
		{"unknown flag", []string{"--nope"}, nil, []string{"flag provided but not defined: -nope"}},
		{"stray argument", []string{"serve"}, nil, []string{`unexpected argument "serve"`}},
		{"bad url scheme", []string{"--database-url", "mysql://x@y/z"}, nil, []string{`scheme "mysql" is not postgres://`}},
		{"unparseable url hides password", []string{"--database-url", "postgres://u:s3cret@[::1/x"}, nil, []string{"--database-url: not a URL"}},
		{"url without host", []string{"--database-url", "postgres:///db"}, nil, []string{"--database-url: no host"}},
		{"feed url without database url", []string{"--feed-database-url", "postgres://h/db"}, nil, []string{"--feed-database-url: needs --database-url"}},
		{"bad feed url", []string{"--database-url", "postgres://h/db", "--feed-database-url", "mysql://h/db"}, nil, []string{`--feed-database-url: scheme "mysql"`}},
		{"bad SIDECAR_MIGRATE", nil, map[string]string{"SIDECAR_MIGRATE": "maybe"}, []string{`SIDECAR_MIGRATE: "maybe"`}},
		{"zero feed heartbeat", []string{"--feed-heartbeat", "0s"}, nil, []string{"--feed-heartbeat"}},
		{"bad log level", []string{"--log-level", "loud"}, nil, []string{`--log-level: "loud"`}},
		{"bad log format", []string{"--log-format", "xml"}, nil, []string{`--log-format: "xml"`}},
		{"bad grpc addr", []string{"--grpc-addr", "nowhere"}, nil, []string{"--grpc-addr", "missing port"}},
		{"relative unix socket", []string{"--grpc-addr", "unix://rel.sock"}, nil, []string{"must be absolute"}},
		{"unix http addr", []string{"--http-addr", "unix:///tmp/x.sock"}, nil, []string{"--http-addr: unix sockets"}},
		{"same addr", []string{"--grpc-addr", "127.0.0.1:5000", "--http-addr", "127.0.0.1:5000"}, nil, []string{"both 127.0.0.1:5000"}},
		{"bad env duration", nil, map[string]string{"SIDECAR_NEGATIVE_TTL": "soon"}, []string{"SIDECAR_NEGATIVE_TTL"}},
		{"negative ttl", []string{"--cache-ttl=-1s"}, nil, []string{"--cache-ttl: -1s must be positive"}},
		{"bad header", []string{"--key-header", "x key"}, nil, []string{`--key-header: "x key"`}},
		{"tiny body cap", []string{"--max-body-bytes", "10"}, nil, []string{"--max-body-bytes"}},
		{"bad cache size", []string{"--cache-max-keys", "0"}, nil, []string{"--cache-max-keys"}},
		{"bad decision log", []string{"--decision-log", "verbose"}, nil, []string{`--decision-log: "verbose"`}},
		{"bad decision sample", []string{"--decision-log-sample", "2"}, nil, []string{"--decision-log-sample"}},
		{"bad webhook URL", []string{"--webhook-url", "http://ok.example,ftp://no.example"}, nil, []string{`--webhook-url: "ftp://no.example"`}},
		{"bad env boolean", nil, map[string]string{"SIDECAR_TRUST_FORWARDED": "sure"}, []string{"SIDECAR_TRUST_FORWARDED"}},
		{"postgres without master key", []string{"--database-url", "postgres://h/db"}, nil, []string{"--master-key", "required with --database-url"}},
		{"zero mgmt timeout", []string{"--mgmt-timeout", "0s"}, nil, []string{"--mgmt-timeout"}},
		{"negative statement timeout", nil, map[string]string{"SIDECAR_DB_STATEMENT_TIMEOUT": "-1s"}, []string{"--db-statement-timeout"}},
		{"bad window", []string{"--rate-limit-window-size", "0"}, nil, []string{"--rate-limit-window-size"}},
		{"bad window env", nil, map[string]string{"LITELLM_RATE_LIMIT_WINDOW_SIZE": "1m"}, []string{"rate-limit window size"}},
		{"bad token type", []string{"--token-rate-limit-type", "all"}, nil, []string{"--token-rate-limit-type"}},
		{"short lease", []string{"--rate-limit-lease-timeout", "10ms"}, nil, []string{"--rate-limit-lease-timeout"}},
		{"bad redis url hides password", []string{"--redis-url", "http://u:s3cret@h"}, nil, []string{"--redis-url"}},
		{"hash tag in prefix", []string{"--redis-key-prefix", "a{b}"}, nil, []string{"--redis-key-prefix"}},
		{"all errors at once", []string{"--log-level", "x", "--log-format", "y", "--grpc-addr", "z"}, nil,
			[]string{"--log-level", "--log-format", "--grpc-addr"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseConfig(tt.args, envOf(tt.env), &bytes.Buffer{})
			if err == nil {
				t.Fatal("want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error leaks the password: %q", err)
			}
		})
	}
}

func TestParseConfigHelp(t *testing.T) {
	var out bytes.Buffer
	_, err := parseConfig([]string{"-h"}, envOf(nil), &out)
	if !errors.Is(err, errHelp) {
		t.Fatalf("err = %v, want errHelp", err)
	}
	for _, f := range []string{"\n  --master-key string", "\n  --database-url string", "$SIDECAR_MASTER_KEY, $LITELLM_MASTER_KEY", "\n  --grpc-addr string", "\n  --trust-forwarded\n", "\n  --version\n"} {
		if !strings.Contains(out.String(), f) {
			t.Errorf("usage lacks %q:\n%s", f, out.String())
		}
	}
}

// --help and --version print to stdout (so `sidecar --help | less` works)
// and exit 0; nothing goes to stderr.
func TestHelpAndVersionGoToStdout(t *testing.T) {
	for _, tc := range []struct {
		arg, want string
		err       error
	}{
		{"--help", "Usage: sidecar [flags]", errHelp},
		{"-h", "Usage: sidecar [flags]", errHelp},
		{"--version", "sidecar ", errVersion},
	} {
		t.Run(tc.arg, func(t *testing.T) {
			var out, errw bytes.Buffer
			err := run(t.Context(), []string{tc.arg}, envOf(nil), &out, &errw)
			if !errors.Is(err, tc.err) {
				t.Fatalf("err = %v, want %v", err, tc.err)
			}
			if !strings.HasPrefix(out.String(), tc.want) {
				t.Errorf("stdout = %q, want prefix %q", out.String(), tc.want)
			}
			if errw.Len() != 0 {
				t.Errorf("stderr = %q, want nothing", errw.String())
			}
		})
	}
}

// Boolean flags and environment variables take pydantic's spellings; any
// other value is an error, never a silent false.
func TestBooleans(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want bool
		err  string
	}{
		{"default", nil, nil, false, ""},
		{"env yes", nil, map[string]string{"SIDECAR_TRUST_FORWARDED": "yes"}, true, ""},
		{"env On", nil, map[string]string{"SIDECAR_TRUST_FORWARDED": "On"}, true, ""},
		{"env 1", nil, map[string]string{"SIDECAR_TRUST_FORWARDED": "1"}, true, ""},
		{"env off", nil, map[string]string{"SIDECAR_TRUST_FORWARDED": "off"}, false, ""},
		{"env typo", nil, map[string]string{"SIDECAR_TRUST_FORWARDED": "ture"}, false, "SIDECAR_TRUST_FORWARDED"},
		{"flag alone", []string{"--trust-forwarded"}, nil, true, ""},
		{"flag =y", []string{"--trust-forwarded=y"}, nil, true, ""},
		{"flag =no overrides env", []string{"--trust-forwarded=no"}, map[string]string{"SIDECAR_TRUST_FORWARDED": "yes"}, false, ""},
		{"flag typo", []string{"--trust-forwarded=maybe"}, nil, false, "trust-forwarded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseConfig(tc.args, envOf(tc.env), &bytes.Buffer{})
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one naming %s", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.TrustForwarded != tc.want {
				t.Errorf("TrustForwarded = %v, want %v", c.TrustForwarded, tc.want)
			}
		})
	}
}

func TestMasterKeyIsGeneratedOnceAndKept(t *testing.T) {
	dir := t.TempDir()
	var first bytes.Buffer
	k1, err := loadOrCreateMasterKey(dir, &first)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(k1, "sk-") || len(k1) != 25 {
		t.Fatalf("generated key %q is not sk- + 22 chars", k1)
	}
	if !strings.Contains(first.String(), k1) || !strings.Contains(first.String(), "WARNING") {
		t.Errorf("first start did not print the key with a warning: %q", first.String())
	}
	fi, err := os.Stat(filepath.Join(dir, masterKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	var second bytes.Buffer
	k2, err := loadOrCreateMasterKey(dir, &second)
	if err != nil {
		t.Fatal(err)
	}
	if k2 != k1 {
		t.Errorf("restart gave %q, want the kept %q", k2, k1)
	}
	if second.Len() != 0 {
		t.Errorf("restart printed %q; the key is printed only once", second.String())
	}
}

func TestMasterKeyFileEmptyIsAnError(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, masterKeyFile), []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadOrCreateMasterKey(dir, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "is empty") {
		t.Fatalf("err = %v, want an 'is empty' error", err)
	}
}

func TestEnsureDataDir(t *testing.T) {
	base := t.TempDir()
	file := filepath.Join(base, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		dir     string
		wantErr string
	}{
		{"creates nested", filepath.Join(base, "a", "b"), ""},
		{"existing", base, ""},
		{"under a file", filepath.Join(file, "sub"), "not a directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ensureDataDir(tt.dir)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if fi, err := os.Stat(tt.dir); err != nil || !fi.IsDir() {
					t.Fatalf("dir not there: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

// JSON logs render durations readably ("1.5ms"), not as nanoseconds.
func TestLogDurationsAreReadable(t *testing.T) {
	for _, format := range []string{"json", "text"} {
		var b bytes.Buffer
		newLogger(&Config{LogFormat: format}, &b).Info("x", slog.Duration("duration", 1500*time.Microsecond))
		if !strings.Contains(b.String(), "1.5ms") || strings.Contains(b.String(), "1500000") {
			t.Errorf("%s: %s", format, b.String())
		}
	}
}

// --config reads LiteLLM's config.yaml below flags and environment variables.
func TestParseConfigLiteLLMConfig(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "config.yaml")
	doc := "general_settings:\n  master_key: os.environ/MY_KEY\n  database_url: postgres://u@cfg:5432/x\n  alerting: [slack]\n" +
		"model_list:\n- model_name: gpt-4o\n  model_info: {access_groups: [g]}\n"
	if err := os.WriteFile(p, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name        string
		args        []string
		env         map[string]string
		wantKey, db string
	}{
		{"from the file", []string{"--config", p}, map[string]string{"MY_KEY": "sk-cfg"}, "sk-cfg", "postgres://u@cfg:5432/x"},
		{"from SIDECAR_CONFIG", nil, map[string]string{"SIDECAR_CONFIG": p, "MY_KEY": "sk-cfg"}, "sk-cfg", "postgres://u@cfg:5432/x"},
		{"environment overrides the file", []string{"--config", p}, map[string]string{"MY_KEY": "sk-cfg", "LITELLM_MASTER_KEY": "sk-env", "DATABASE_URL": "postgres://u@env:5432/x"}, "sk-env", "postgres://u@env:5432/x"},
		{"flags override the file", []string{"--config", p, "--master-key", "sk-flag", "--database-url", "postgres://u@flag:5432/x"}, map[string]string{"MY_KEY": "sk-cfg"}, "sk-flag", "postgres://u@flag:5432/x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseConfig(tt.args, envOf(tt.env), &bytes.Buffer{})
			if err != nil {
				t.Fatal(err)
			}
			if c.MasterKey != tt.wantKey || c.DatabaseURL != tt.db {
				t.Errorf("master key %q database %q", c.MasterKey, c.DatabaseURL)
			}
			if c.LiteLLM == nil || !reflect.DeepEqual(c.LiteLLM.AccessGroups["g"], []string{"gpt-4o"}) ||
				!reflect.DeepEqual(c.LiteLLM.Ignored, []string{"general_settings.alerting"}) {
				t.Errorf("litellm config %+v", c.LiteLLM)
			}
		})
	}
	for _, bad := range []struct{ name, doc, want string }{
		{"unset env reference", "general_settings: {master_key: os.environ/UNSET}\n", "--config: litellm config"},
		{"not YAML", "a: [", "not YAML"},
		{"database_url not postgres", "general_settings: {database_url: mysql://x}\n", "--database-url: scheme"},
		{"price out of range", "model_list:\n- model_name: big\n  litellm_params: {input_cost_per_token: 2e6}\n", `model_list model_name "big": pricing: custom price "big": input_cost_per_token = 2e+06 is not a price`},
	} {
		t.Run(bad.name, func(t *testing.T) {
			q := filepath.Join(t.TempDir(), "c.yaml")
			if err := os.WriteFile(q, []byte(bad.doc), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := parseConfig([]string{"--config", q}, envOf(nil), &bytes.Buffer{})
			if err == nil || !strings.Contains(err.Error(), bad.want) {
				t.Fatalf("got %v, want %q", err, bad.want)
			}
		})
	}
	if _, err := parseConfig([]string{"--config", filepath.Join(dir, "missing.yaml")}, envOf(nil), &bytes.Buffer{}); err == nil {
		t.Error("a missing --config file must be an error")
	}
}
