package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/virtualkeys/sidecar/internal/litellmconfig"
	"github.com/virtualkeys/sidecar/internal/pricing"
	"github.com/virtualkeys/sidecar/internal/pybool"

	"github.com/virtualkeys/sidecar/internal/ratelimit"
)

// Config is the sidecar's whole configuration. Each field's comment says
// what its zero value means; parseConfig fills the documented defaults.
type Config struct {
	// MasterKey is the admin credential. Empty after parsing means "load the
	// one kept in DataDir, or generate and keep one" (embedded store only:
	// with DatabaseURL it is required, so every replica shares one key).
	MasterKey string
	// DatabaseURL selects the store: a postgres:// (or postgresql://) URL
	// selects Postgres; empty selects the embedded SQLite store in DataDir.
	DatabaseURL string
	// FeedDatabaseURL is where the Postgres change-feed listener connects;
	// empty means DatabaseURL. A PgBouncer deployment in transaction pooling
	// sets it to a direct Postgres URL (LISTEN needs a session).
	FeedDatabaseURL string
	// NoMigrate: verify the database instead of creating the sidecar's
	// objects (--migrate=false, for a least-privilege role). false means
	// create what is missing.
	NoMigrate bool
	// FeedHeartbeat is how often the Postgres store checks its change feed
	// hears its own NOTIFY; the feed is deaf after 3 missed. 0 means 5s.
	FeedHeartbeat time.Duration
	// DataDir holds the embedded database and a generated master key.
	DataDir string
	// GRPCAddr is the ext_authz gRPC listen address: host:port or
	// unix:///path/to/socket.
	GRPCAddr string
	// HTTPAddr is the management API, health and metrics listen address.
	HTTPAddr string
	// LogLevel is debug, info, warn or error.
	LogLevel slog.Level
	// LogFormat is json or text.
	LogFormat string

	// CacheMaxKeys bounds the number of keys the Check keeps in memory.
	CacheMaxKeys int
	// NegativeTTL is how long an unknown key is remembered as unknown.
	NegativeTTL time.Duration
	// CacheTTL is the safety TTL after which a cached key is reloaded even
	// without an invalidation.
	CacheTTL time.Duration
	// LookupTimeout bounds one store lookup made by the Check on a cache miss.
	LookupTimeout time.Duration
	// MgmtTimeout bounds the store work of one management API request; past
	// it the request answers 503 (no_db_connection).
	MgmtTimeout time.Duration
	// DBStatementTimeout is Postgres's server-side statement_timeout for the
	// pool (a statement_timeout in DatabaseURL wins).
	DBStatementTimeout time.Duration
	// CacheMaxLoads bounds the store lookups in flight for cache misses;
	// a miss beyond it fails closed at once.
	CacheMaxLoads int
	// CacheUnknownRate is how many keys per second that the known-key filter
	// does not have may still be looked up in the store (flood budget).
	CacheUnknownRate int
	// FeedStaleBound is the age past which a cached key is re-read while the
	// change feed is down or deaf.
	FeedStaleBound time.Duration
	// KeyHeader, when set, is the only header the Check reads the key from,
	// replacing LiteLLM's list.
	KeyHeader string
	// ModelHeader, when set, names a request header that carries a model;
	// like every model the request names, it must be allowed.
	ModelHeader string
	// ModelAliasesResolved lets a key's aliases and config.yaml's
	// router_settings.model_group_alias grant access to the alias name (and
	// prices a model_group_alias as its target), for deployments where
	// something downstream (a LiteLLM proxy or router) resolves aliases.
	// false: the requested name must be allowed, and model_group_alias is
	// not used.
	ModelAliasesResolved bool
	// IdentityHeaderPrefix prefixes the identity headers set on allow.
	IdentityHeaderPrefix string
	// AccessGroupsFile is a JSON file {"group": ["model", ...]}; empty = none.
	// Its groups are merged with those of ConfigFile's model_list.
	AccessGroupsFile string
	// ConfigFile is an operator's LiteLLM config.yaml; empty = none. Flags
	// and environment variables override what it sets.
	ConfigFile string
	// LiteLLM is what parseConfig read from ConfigFile; nil when none.
	LiteLLM *litellmconfig.Config
	// MaxBodyBytes caps management request bodies and the gRPC message size.
	MaxBodyBytes int64
	// TrustForwarded makes the HTTP authz mode read the original method and
	// URI from X-Forwarded-* / X-Original-* headers.
	TrustForwarded bool
	// BudgetResetInterval is how often keys past budget_reset_at are reset.
	BudgetResetInterval time.Duration
	// ShutdownTimeout bounds the graceful drain on SIGTERM.
	ShutdownTimeout time.Duration
	// GRPCMetrics turns on grpc-go's standard Prometheus server metrics.
	GRPCMetrics bool
	// DecisionLog is off, deny (every denial and fail-closed decision) or
	// all (those plus DecisionLogSample of the allows).
	DecisionLog string
	// DecisionLogSample is the fraction of allows logged with DecisionLog all.
	DecisionLogSample float64
	// WebhookURLs receive LiteLLM webhook events (key mutations, budget
	// alerts); empty sends none.
	WebhookURLs []string
	// WebhookSecret signs webhook deliveries (HMAC-SHA256); empty = unsigned.
	WebhookSecret string
	// ShutdownDelay is how long the sidecar keeps serving while reporting
	// not ready, before it starts draining (lets load balancers notice).
	ShutdownDelay time.Duration

	// Metering (ext_proc). SpendFlushInterval is how often metered spend
	// is written to the store (and on shutdown).
	SpendFlushInterval time.Duration
	// SpendMaxPendingLogs bounds the spend-log rows kept while the store
	// is down (spend itself is never dropped).
	SpendMaxPendingLogs int
	// PriceTable is a price file path or http(s) URL in LiteLLM's
	// model_prices_and_context_window.json format; empty = bundled table.
	PriceTable string
	// PriceReloadInterval is how often PriceTable is checked; 0 = 1m for a
	// file, 1h for a URL.
	PriceReloadInterval time.Duration
	// CustomPricesFile is a JSON file {"model": {"input_cost_per_token":
	// ..., ...}} of prices on top of the table and, key by key, over
	// ConfigFile's model_list prices; empty = none.
	CustomPricesFile string
	// ModelDeployments maps Azure deployment names to the model priced,
	// "dep=model,dep2=model2" (validated; parseDeployments reads it);
	// empty = none.
	ModelDeployments string
	// UnknownModelCostPerToken is charged per token for models the table
	// does not know; 0 = free (still counted and logged).
	UnknownModelCostPerToken float64
	// InjectIncludeUsage lets ext_proc add stream_options.include_usage to
	// OpenAI streams; false = such streams are charged by estimate.
	InjectIncludeUsage bool
	// RateLimitWindow is the rate-limit window (whole seconds; LiteLLM's
	// LITELLM_RATE_LIMIT_WINDOW_SIZE).
	RateLimitWindow time.Duration
	// TokenRateLimitType is output, input or total: the tokens tpm limits count.
	TokenRateLimitType ratelimit.TokenType
	// RateLimitLeaseTimeout frees a max_parallel_requests slot whose
	// response end never arrived.
	RateLimitLeaseTimeout time.Duration
	// RedisURL, when set, keeps rate-limit counters in Redis, shared by
	// every replica; empty counts on this replica only.
	RedisURL string
	// RedisTimeout bounds one Redis round trip of the Check; past it the
	// Check counts locally until Redis answers again.
	RedisTimeout time.Duration
	// RedisKeyPrefix is put before every rate-limit key in Redis.
	RedisKeyPrefix string
}

// errHelp is returned when -h/--help was asked for; usage was printed.
var errHelp = flag.ErrHelp

// errVersion is returned when --version was asked for; it was printed.
var errVersion = errors.New("version printed")

// printUsage writes the flags as the README spells them: --name, the
// environment variables, and the default.
func printUsage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprint(w, "Usage: sidecar [flags]\n\nFlags (each falls back to the environment variable named, then to the default):\n")
	fs.VisitAll(func(f *flag.Flag) {
		name, _ := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		if bf, ok := f.Value.(interface{ IsBoolFlag() bool }); !(ok && bf.IsBoolFlag()) {
			if name == "" {
				name = "value"
			}
			line += " " + name
		}
		fmt.Fprintf(w, "%s\n    \t%s", line, strings.ReplaceAll(f.Usage, "\n", "\n    \t"))
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" && f.DefValue != "0s" {
			fmt.Fprintf(w, " (default %q)", f.DefValue)
		}
		fmt.Fprintln(w)
	})
}

// versionString is the module version and VCS revision the binary was
// built from (as recorded by the Go toolchain), and the Go version.
func versionString() string {
	version, commit, dirty := "(devel)", "unknown", false
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				commit = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
	}
	if dirty {
		commit += "-dirty"
	}
	return fmt.Sprintf("sidecar %s (commit %s, %s)", version, commit, runtime.Version())
}

// parseConfig reads flags, falling back to environment variables, then to
// defaults, and validates everything at once.
func parseConfig(args []string, getenv func(string) string, usage io.Writer) (*Config, error) {
	c := &Config{}
	fs := flag.NewFlagSet("sidecar", flag.ContinueOnError)
	fs.SetOutput(io.Discard)

	env := func(names ...string) string {
		for _, n := range names {
			if v := getenv(n); v != "" {
				return v
			}
		}
		return ""
	}
	str := func(p *string, name, def, help string, envs ...string) {
		v := env(envs...)
		if v == "" {
			v = def
		}
		fs.StringVar(p, name, v, help+envHelp(envs))
	}
	var envErrs []error
	dur := func(p *time.Duration, name string, def time.Duration, help string, envName string) {
		v := def
		if s := getenv(envName); s != "" {
			d, err := time.ParseDuration(s)
			if err != nil {
				envErrs = append(envErrs, fmt.Errorf("%s: %w", envName, err))
			} else {
				v = d
			}
		}
		fs.DurationVar(p, name, v, help+envHelp([]string{envName}))
	}
	// boolean flags and their environment variables take pydantic's
	// spellings (true/false, 1/0, yes/no, on/off, t/f, y/n, any case);
	// anything else is an error, never a silent false.
	boolean := func(p *bool, name string, def bool, help string, envName string) {
		*p = def
		if s := getenv(envName); s != "" {
			b, err := pybool.Parse(s)
			if err != nil {
				envErrs = append(envErrs, fmt.Errorf("%s: %q: %w", envName, s, err))
			} else {
				*p = b
			}
		}
		fs.Var((*boolValue)(p), name, help+envHelp([]string{envName}))
	}
	integer := func(p *int64, name string, def int64, help string, envName string) {
		v := def
		if s := getenv(envName); s != "" {
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				envErrs = append(envErrs, fmt.Errorf("%s: invalid integer %q", envName, s))
			} else {
				v = n
			}
		}
		fs.Int64Var(p, name, v, help+envHelp([]string{envName}))
	}

	var logLevel, tokenType string
	var cacheMax, cacheLoads, unknownRate, window int64
	str(&c.ConfigFile, "config", "", "LiteLLM config.yaml to read master_key, database_url, key-generation settings, model access groups and prices from (flags and environment override it; see docs/config.md)", "SIDECAR_CONFIG")
	str(&c.MasterKey, "master-key", "", "admin key for the management API and the data plane; required with --database-url; with the embedded store generated and kept in the data dir when empty", "SIDECAR_MASTER_KEY", "LITELLM_MASTER_KEY")
	str(&c.DatabaseURL, "database-url", "", "postgres:// URL of the key database; empty = embedded store in the data dir", "DATABASE_URL")
	str(&c.FeedDatabaseURL, "feed-database-url", "", "postgres:// URL the change-feed listener uses (LISTEN needs a session: set a direct URL when --database-url goes through PgBouncer transaction pooling); empty = --database-url", "SIDECAR_FEED_DATABASE_URL")
	var migrate bool
	boolean(&migrate, "migrate", true, "Postgres: create the sidecar's schema litellm_sidecar and change triggers (and LiteLLM's tables on an empty database); false = only verify they exist (least-privilege role)", "SIDECAR_MIGRATE")
	dur(&c.FeedHeartbeat, "feed-heartbeat", 5*time.Second, "how often the Postgres change feed checks it hears its own NOTIFY; deaf after 3 missed", "SIDECAR_FEED_HEARTBEAT")
	str(&c.DataDir, "data-dir", "./data", "directory for the embedded store and the generated master key", "SIDECAR_DATA_DIR")
	str(&c.GRPCAddr, "grpc-addr", "127.0.0.1:9001", "ext_authz gRPC listen address (host:port or unix:///path)", "SIDECAR_GRPC_ADDR")
	str(&c.HTTPAddr, "http-addr", "127.0.0.1:4000", "management API, health and metrics listen address", "SIDECAR_HTTP_ADDR")
	str(&logLevel, "log-level", "info", "debug, info, warn or error", "SIDECAR_LOG_LEVEL")
	str(&c.LogFormat, "log-format", "json", "json or text", "SIDECAR_LOG_FORMAT")
	integer(&cacheMax, "cache-max-keys", 100000, "keys the Check keeps in memory", "SIDECAR_CACHE_MAX_KEYS")
	dur(&c.NegativeTTL, "negative-ttl", 5*time.Second, "how long an unknown key is remembered as unknown", "SIDECAR_NEGATIVE_TTL")
	dur(&c.CacheTTL, "cache-ttl", 5*time.Minute, "safety TTL of a cached key (invalidation is by change feed; this bounds staleness if a notification is ever lost)", "SIDECAR_CACHE_TTL")
	dur(&c.LookupTimeout, "lookup-timeout", 500*time.Millisecond, "bound on one store lookup made by the Check on a cache miss", "SIDECAR_LOOKUP_TIMEOUT")
	dur(&c.MgmtTimeout, "mgmt-timeout", 10*time.Second, "bound on the store work of one management API request (503 beyond)", "SIDECAR_MGMT_TIMEOUT")
	dur(&c.DBStatementTimeout, "db-statement-timeout", 5*time.Second, "Postgres statement_timeout of the sidecar's pool connections", "SIDECAR_DB_STATEMENT_TIMEOUT")
	integer(&cacheLoads, "cache-max-loads", 64, "store lookups in flight for cache misses; more fail closed at once (503)", "SIDECAR_CACHE_MAX_LOADS")
	integer(&unknownRate, "cache-unknown-rate", 20, "keys per second not in the known-key filter that may still be looked up in the store (flood budget)", "SIDECAR_CACHE_UNKNOWN_RATE")
	dur(&c.FeedStaleBound, "feed-stale-bound", 30*time.Second, "while the change feed is down, re-read cached keys older than this (served as cached if the store is down too)", "SIDECAR_FEED_STALE_BOUND")
	str(&c.KeyHeader, "key-header", "", "read the key only from this header instead of LiteLLM's list", "SIDECAR_KEY_HEADER")
	str(&c.ModelHeader, "model-header", "", "header carrying a model; checked like every other place a model is named", "SIDECAR_MODEL_HEADER")
	aliases := env("SIDECAR_MODEL_ALIASES_RESOLVED") == "true" || env("SIDECAR_MODEL_ALIASES_RESOLVED") == "1"
	fs.BoolVar(&c.ModelAliasesResolved, "model-aliases-resolved", aliases, "a key's aliases and config.yaml's model_group_alias grant access to the alias name (set only when a LiteLLM proxy or router upstream resolves aliases)"+envHelp([]string{"SIDECAR_MODEL_ALIASES_RESOLVED"}))
	str(&c.IdentityHeaderPrefix, "identity-header-prefix", "x-litellm-", "prefix of the identity headers set upstream on allow", "SIDECAR_IDENTITY_HEADER_PREFIX")
	str(&c.AccessGroupsFile, "access-groups-file", "", `JSON file of model access groups {"group": ["model", ...]}`, "SIDECAR_ACCESS_GROUPS_FILE")
	integer(&c.MaxBodyBytes, "max-body-bytes", 1<<20, "cap on management request bodies and on the request body the Check reads", "SIDECAR_MAX_BODY_BYTES")
	boolean(&c.TrustForwarded, "trust-forwarded", false, "HTTP authz mode: take the original method/URI from X-Forwarded-*/X-Original-* (enable only behind a local proxy)", "SIDECAR_TRUST_FORWARDED")
	dur(&c.BudgetResetInterval, "budget-reset-interval", time.Minute, "how often keys past budget_reset_at are reset", "SIDECAR_BUDGET_RESET_INTERVAL")
	dur(&c.ShutdownTimeout, "shutdown-timeout", 15*time.Second, "bound on the graceful drain", "SIDECAR_SHUTDOWN_TIMEOUT")
	dur(&c.ShutdownDelay, "shutdown-delay", 0, "keep serving while not ready for this long before draining", "SIDECAR_SHUTDOWN_DELAY")
	window = 60
	if v := env("SIDECAR_RATE_LIMIT_WINDOW_SIZE", "LITELLM_RATE_LIMIT_WINDOW_SIZE"); v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err != nil {
			envErrs = append(envErrs, fmt.Errorf("rate-limit window size: invalid integer %q", v))
		} else {
			window = n
		}
	}
	fs.Int64Var(&window, "rate-limit-window-size", window, "rate-limit window in seconds (rpm and tpm count per window)"+envHelp([]string{"SIDECAR_RATE_LIMIT_WINDOW_SIZE", "LITELLM_RATE_LIMIT_WINDOW_SIZE"}))
	str(&tokenType, "token-rate-limit-type", "output", "tokens that count toward tpm limits: output, input or total", "SIDECAR_TOKEN_RATE_LIMIT_TYPE")
	dur(&c.RateLimitLeaseTimeout, "rate-limit-lease-timeout", ratelimit.DefaultLeaseTimeout, "a max_parallel_requests slot whose response end never arrives is freed after this long", "SIDECAR_RATE_LIMIT_LEASE_TIMEOUT")
	str(&c.RedisURL, "redis-url", "", "redis:// or rediss:// URL: rate-limit counters shared by every replica; empty = counted on this replica", "SIDECAR_REDIS_URL", "REDIS_URL")
	dur(&c.RedisTimeout, "redis-timeout", ratelimit.DefaultRedisTimeout, "bound on one Redis round trip; past it the Check counts locally until Redis answers", "SIDECAR_REDIS_TIMEOUT")
	str(&c.RedisKeyPrefix, "redis-key-prefix", "vk:", "prefix of the rate-limit keys in Redis", "SIDECAR_REDIS_KEY_PREFIX")

	var spendLogs int64
	var unknownCost string
	dur(&c.SpendFlushInterval, "spend-flush-interval", time.Second, "how often metered spend is flushed to the store (and on shutdown)", "SIDECAR_SPEND_FLUSH_INTERVAL")
	integer(&spendLogs, "spend-max-pending-logs", 100000, "spend-log rows kept while the store is down (spend itself is never dropped)", "SIDECAR_SPEND_MAX_PENDING_LOGS")
	str(&c.PriceTable, "price-table", "", "LiteLLM model_prices_and_context_window.json file or http(s) URL; empty = bundled table", "SIDECAR_PRICE_TABLE")
	dur(&c.PriceReloadInterval, "price-reload-interval", 0, "how often --price-table is checked for changes (0 = 1m for a file, 1h for a URL)", "SIDECAR_PRICE_RELOAD_INTERVAL")
	str(&c.CustomPricesFile, "custom-prices-file", "", `JSON {"model": {"input_cost_per_token": ..., "output_cost_per_token": ...}} priced on top of the table (and over --config's model_list prices, key by key)`, "SIDECAR_CUSTOM_PRICES_FILE")
	str(&c.ModelDeployments, "model-deployments", "", "Azure deployment names to the model priced: dep=model,dep2=model2", "SIDECAR_MODEL_DEPLOYMENTS")
	str(&unknownCost, "unknown-model-cost-per-token", "0", "USD per prompt/output token for models not in the price table", "SIDECAR_UNKNOWN_MODEL_COST_PER_TOKEN")
	boolean(&c.InjectIncludeUsage, "inject-include-usage", true, "ext_proc adds stream_options.include_usage to OpenAI streams that lack it (else they are charged by estimate)", "SIDECAR_INJECT_INCLUDE_USAGE")
	boolean(&c.GRPCMetrics, "grpc-metrics", true, "grpc-go's standard Prometheus server metrics (grpc_server_*) on /metrics", "SIDECAR_GRPC_METRICS")
	str(&c.DecisionLog, "decision-log", "off", "per-request decision log: off, deny (every denial) or all (denials plus --decision-log-sample of the allows)", "SIDECAR_DECISION_LOG")
	sample := "0.01"
	str(&sample, "decision-log-sample", "0.01", "fraction of allowed requests logged with --decision-log all (0 to 1)", "SIDECAR_DECISION_LOG_SAMPLE")
	var webhookURLs string
	str(&webhookURLs, "webhook-url", "", "comma-separated http(s) URLs that receive LiteLLM webhook events (key created/updated/regenerated/deleted/blocked/unblocked, budget alerts)", "SIDECAR_WEBHOOK_URL")
	str(&c.WebhookSecret, "webhook-secret", "", "HMAC-SHA256 secret signing webhook deliveries (X-Sidecar-Signature); empty = unsigned", "SIDECAR_WEBHOOK_SECRET")
	var version bool
	fs.BoolVar(&version, "version", false, "print the version and exit")

	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(usage, fs)
			return nil, errHelp
		}
		return nil, fmt.Errorf("%w (see --help)", err)
	}
	if version {
		fmt.Fprintln(usage, versionString())
		return nil, errVersion
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}

	errs := envErrs
	if c.ConfigFile != "" {
		lc, err := litellmconfig.Load(c.ConfigFile, getenv)
		if err != nil {
			errs = append(errs, fmt.Errorf("--config: %w", err))
		} else {
			c.LiteLLM = lc
			if err := checkConfigPrices(c.ConfigFile, lc.Prices); err != nil {
				errs = append(errs, err)
			}
			// config.yaml sits below flags and environment variables.
			if c.MasterKey == "" {
				c.MasterKey = lc.MasterKey
			}
			if c.DatabaseURL == "" {
				c.DatabaseURL = lc.DatabaseURL
			}
		}
	}
	switch c.DecisionLog {
	case "off", "deny", "all":
	default:
		errs = append(errs, fmt.Errorf("--decision-log: %q is not off, deny or all", c.DecisionLog))
	}
	if f, err := strconv.ParseFloat(sample, 64); err != nil || !(f >= 0 && f <= 1) {
		errs = append(errs, fmt.Errorf("--decision-log-sample: %q is not a number from 0 to 1", sample))
	} else {
		c.DecisionLogSample = f
	}
	for _, u := range strings.Split(webhookURLs, ",") {
		if u = strings.TrimSpace(u); u == "" {
			continue
		}
		if p, err := url.Parse(u); err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			errs = append(errs, fmt.Errorf("--webhook-url: %q is not an http(s) URL", u))
			continue
		}
		c.WebhookURLs = append(c.WebhookURLs, u)
	}
	if err := c.LogLevel.UnmarshalText([]byte(logLevel)); err != nil {
		errs = append(errs, fmt.Errorf("--log-level: %q is not debug, info, warn or error", logLevel))
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		errs = append(errs, fmt.Errorf("--log-format: %q is not json or text", c.LogFormat))
	}
	if cacheMax < 1 || cacheMax > 1<<31 {
		errs = append(errs, fmt.Errorf("--cache-max-keys: %d is not between 1 and 2^31", cacheMax))
	} else {
		c.CacheMaxKeys = int(cacheMax)
	}
	for _, n := range []struct {
		flag string
		v    int64
		out  *int
	}{{"--cache-max-loads", cacheLoads, &c.CacheMaxLoads}, {"--cache-unknown-rate", unknownRate, &c.CacheUnknownRate}} {
		if n.v < 1 || n.v > 1<<20 {
			errs = append(errs, fmt.Errorf("%s: %d is not between 1 and 2^20", n.flag, n.v))
		} else {
			*n.out = int(n.v)
		}
	}
	if c.DatabaseURL != "" {
		if err := validateDatabaseURL(c.DatabaseURL); err != nil {
			errs = append(errs, err)
		}
		if c.MasterKey == "" {
			// A generated key would be each replica's own.
			errs = append(errs, errors.New("--master-key (or SIDECAR_MASTER_KEY / LITELLM_MASTER_KEY) is required with --database-url: every replica must share one master key"))
		}
	}
	c.NoMigrate = !migrate
	if c.FeedDatabaseURL != "" {
		if c.DatabaseURL == "" {
			errs = append(errs, errors.New("--feed-database-url: needs --database-url (the embedded store has no change feed to move)"))
		} else if err := validateDatabaseURL(c.FeedDatabaseURL); err != nil {
			errs = append(errs, errors.New(strings.Replace(err.Error(), "--database-url", "--feed-database-url", 1)))
		}
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("--data-dir: must not be empty"))
	}
	for _, a := range []struct{ flag, addr string }{{"--grpc-addr", c.GRPCAddr}, {"--http-addr", c.HTTPAddr}} {
		if err := validateAddr(a.addr); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", a.flag, err))
		}
	}
	if strings.HasPrefix(c.HTTPAddr, "unix://") {
		errs = append(errs, errors.New("--http-addr: unix sockets are supported for --grpc-addr only"))
	}
	if c.GRPCAddr == c.HTTPAddr && !strings.HasSuffix(c.GRPCAddr, ":0") { // port 0: each gets its own
		errs = append(errs, fmt.Errorf("--grpc-addr and --http-addr are both %s", c.GRPCAddr))
	}
	for _, d := range []struct {
		flag string
		v    time.Duration
		zero bool // zero allowed
	}{
		{"--negative-ttl", c.NegativeTTL, false}, {"--cache-ttl", c.CacheTTL, false},
		{"--lookup-timeout", c.LookupTimeout, false}, {"--feed-stale-bound", c.FeedStaleBound, false}, {"--budget-reset-interval", c.BudgetResetInterval, false},
		{"--mgmt-timeout", c.MgmtTimeout, false}, {"--db-statement-timeout", c.DBStatementTimeout, false},
		{"--shutdown-timeout", c.ShutdownTimeout, false}, {"--shutdown-delay", c.ShutdownDelay, true},
		{"--feed-heartbeat", c.FeedHeartbeat, false},
	} {
		if d.v < 0 || (!d.zero && d.v == 0) {
			errs = append(errs, fmt.Errorf("%s: %s must be positive", d.flag, d.v))
		}
	}
	if spendLogs < 1 || spendLogs > 1<<31 {
		errs = append(errs, fmt.Errorf("--spend-max-pending-logs: %d is not between 1 and 2^31", spendLogs))
	} else {
		c.SpendMaxPendingLogs = int(spendLogs)
	}
	if c.SpendFlushInterval <= 0 {
		errs = append(errs, fmt.Errorf("--spend-flush-interval: %s must be positive", c.SpendFlushInterval))
	}
	if c.PriceReloadInterval < 0 {
		errs = append(errs, fmt.Errorf("--price-reload-interval: %s must not be negative", c.PriceReloadInterval))
	}
	if f, err := strconv.ParseFloat(unknownCost, 64); err != nil || f < 0 || f != f || f > 1 {
		errs = append(errs, fmt.Errorf("--unknown-model-cost-per-token: %q is not a USD amount between 0 and 1", unknownCost))
	} else {
		c.UnknownModelCostPerToken = f
	}
	if _, err := parseDeployments(c.ModelDeployments); err != nil {
		errs = append(errs, err)
	}
	if window < 1 || window > 1<<31 {
		errs = append(errs, fmt.Errorf("--rate-limit-window-size: %d is not a number of seconds >= 1", window))
	} else {
		c.RateLimitWindow = time.Duration(window) * time.Second
	}
	if t, err := ratelimit.ParseTokenType(tokenType); err != nil {
		errs = append(errs, fmt.Errorf("--token-rate-limit-type: %w", err))
	} else {
		c.TokenRateLimitType = t
	}
	if c.RateLimitLeaseTimeout < time.Second {
		errs = append(errs, fmt.Errorf("--rate-limit-lease-timeout: %s is below 1s", c.RateLimitLeaseTimeout))
	}
	if c.RedisTimeout <= 0 {
		errs = append(errs, fmt.Errorf("--redis-timeout: %s must be positive", c.RedisTimeout))
	}
	if c.RedisURL != "" {
		if _, err := redis.ParseURL(c.RedisURL); err != nil {
			errs = append(errs, errors.New("--redis-url: not a redis:// or rediss:// URL"))
		}
	}
	if strings.ContainsAny(c.RedisKeyPrefix, "{}") {
		errs = append(errs, errors.New("--redis-key-prefix: must not contain { or } (Redis Cluster hash tags)"))
	}
	if c.MaxBodyBytes < 1024 {
		errs = append(errs, fmt.Errorf("--max-body-bytes: %d is below the 1024-byte minimum", c.MaxBodyBytes))
	}
	if c.KeyHeader != "" && !validHeaderName(c.KeyHeader) {
		errs = append(errs, fmt.Errorf("--key-header: %q is not a valid header name", c.KeyHeader))
	}
	if c.ModelHeader != "" && !validHeaderName(c.ModelHeader) {
		errs = append(errs, fmt.Errorf("--model-header: %q is not a valid header name", c.ModelHeader))
	}
	if !validHeaderName(strings.TrimSuffix(c.IdentityHeaderPrefix, "-") + "-x") {
		errs = append(errs, fmt.Errorf("--identity-header-prefix: %q does not make valid header names", c.IdentityHeaderPrefix))
	}
	c.KeyHeader = strings.ToLower(c.KeyHeader)
	c.ModelHeader = strings.ToLower(c.ModelHeader)
	c.IdentityHeaderPrefix = strings.ToLower(c.IdentityHeaderPrefix)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return c, nil
}

// boolValue is a bool flag with pydantic's spellings; "--name" alone means true.
type boolValue bool

func (b *boolValue) String() string {
	if b == nil {
		return "false"
	}
	return strconv.FormatBool(bool(*b))
}

func (b *boolValue) Set(s string) error {
	v, err := pybool.Parse(s)
	if err != nil {
		return err
	}
	*b = boolValue(v)
	return nil
}

func (b *boolValue) IsBoolFlag() bool { return true }

func envHelp(envs []string) string {
	if len(envs) == 0 {
		return ""
	}
	return " [$" + strings.Join(envs, ", $") + "]"
}

func validateDatabaseURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("--database-url: not a URL (%s)", redactParseError(err))
	}
	switch u.Scheme {
	case "postgres", "postgresql":
	default:
		return fmt.Errorf("--database-url: scheme %q is not postgres:// (leave it empty for the embedded store)", u.Scheme)
	}
	if u.Host == "" && u.Query().Get("host") == "" {
		return errors.New("--database-url: no host")
	}
	return nil
}

// redactParseError drops the URL (which may hold a password) from a
// url.Parse error.
func redactParseError(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return "unparseable"
}

func validateAddr(a string) error {
	if p, ok := strings.CutPrefix(a, "unix://"); ok {
		if !filepath.IsAbs(p) {
			return fmt.Errorf("%q: unix socket path must be absolute (unix:///path)", a)
		}
		return nil
	}
	host, port, err := splitHostPort(a)
	if err != nil {
		return fmt.Errorf("%q: %w", a, err)
	}
	_ = host
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q: bad port %q", a, port)
	}
	return nil
}

func splitHostPort(a string) (host, port string, err error) {
	i := strings.LastIndexByte(a, ':')
	if i < 0 {
		return "", "", errors.New("missing port (want host:port)")
	}
	host, port = a[:i], a[i+1:]
	if strings.HasPrefix(host, "[") != strings.HasSuffix(host, "]") {
		return "", "", errors.New("unbalanced brackets")
	}
	return host, port, nil
}

func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c == '-' || c == '_' || c == '.' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
		if !ok {
			return false
		}
	}
	return true
}

// ensureDataDir creates dir if needed and proves it is writable.
func ensureDataDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("data dir %s: %w", dir, pathErr(err))
	}
	f, err := os.CreateTemp(dir, ".write-test-*")
	if err != nil {
		return fmt.Errorf("data dir %s is not writable: %w", dir, pathErr(err))
	}
	name := f.Name()
	f.Close()
	return os.Remove(name)
}

// pathErr strips the path from an *os.PathError, whose message our own
// wrapping already names.
func pathErr(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// parseDeployments reads --model-deployments: "dep=model,dep2=model2".
func parseDeployments(s string) (map[string]string, error) {
	m, err := pricing.ParseDeployments(s)
	if err != nil {
		return nil, fmt.Errorf("--model-deployments: %w", err)
	}
	return m, nil
}
