package mgmt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	perm "github.com/virtualkeys/sidecar/internal/access"
	"github.com/virtualkeys/sidecar/internal/apierr"
	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/pybool"
	"github.com/virtualkeys/sidecar/internal/store"
)

// clock returns now in UTC at millisecond precision, the precision the
// stores keep (TIMESTAMP(3)), so what a response shows is what a read shows.
func (a *API) clock() time.Time { return a.now().UTC().Truncate(time.Millisecond) }

// changedBy names who acts, for created_by/updated_by and the audit log.
func changedBy(r *http.Request, c *caller) string {
	if v := strings.TrimSpace(r.Header.Get("litellm-changed-by")); v != "" {
		return v
	}
	if u := c.userID(); u != "" {
		return u
	}
	return DefaultChangedBy
}

// audit appends one audit row. The mutation has already committed, so a
// failed append is logged, not reported to the caller (LiteLLM writes audit
// rows in the background too).
func (a *API) audit(ctx context.Context, r *http.Request, c *caller, action, hash string, before, after map[string]any) {
	// The mutation is committed: tell the webhook receivers (asynchronous,
	// never blocking or failing this call), whatever becomes of the audit row.
	if a.events != nil {
		row := after
		if len(row) == 0 {
			row = before
		}
		if ev, ok := keyEvent(action, hash, row); ok {
			a.events.Send(ev)
		}
	}
	err := a.st.AppendAudit(ctx, &keys.Audit{
		ChangedBy:       changedBy(r, c),
		ChangedByAPIKey: c.hash,
		Action:          action,
		TableName:       keys.KeyTable,
		ObjectID:        hash,
		BeforeValue:     before,
		UpdatedValues:   after,
	})
	if err != nil {
		a.log.ErrorContext(ctx, "audit log append failed",
			slog.String("action", action), slog.String("key_hash", keys.Redact(hash)), slog.Any("error", err))
		return
	}
	a.log.InfoContext(ctx, "key "+action, slog.String("key_hash", keys.Redact(hash)), slog.String("changed_by", changedBy(r, c)))
}

// checkAlias fails when alias belongs to a key other than self.
func (a *API) checkAlias(ctx context.Context, alias, self string) error {
	k, err := a.st.GetByAlias(ctx, alias)
	switch {
	case errors.Is(err, keys.ErrNotFound):
		return nil
	case err != nil:
		return fmt.Errorf("check alias: %w", err)
	case k.Token != self:
		return errAliasExists(alias)
	}
	return nil
}

func (a *API) generate(r *http.Request, c *caller) (any, error) {
	f, err := decodeKeyFields(r, true)
	if err != nil {
		return nil, err
	}
	if err := a.applyKeyGenRules(r, c, f); err != nil {
		return nil, err
	}
	p, err := validate(f)
	if err != nil {
		return nil, err
	}
	raw := keys.Generate()
	if f.Key.ok() {
		if !strings.HasPrefix(f.Key.V, keys.Prefix) {
			return nil, badRequest("key", "Invalid key format. LiteLLM Virtual Key must start with 'sk-'.")
		}
		raw = f.Key.V
	}
	hash := keys.HashHex(raw)
	ctx := r.Context()
	if f.KeyAlias.ok() {
		if err := a.checkAlias(ctx, f.KeyAlias.V, hash); err != nil {
			return nil, err
		}
	}
	now := a.clock()
	who := changedBy(r, c)
	name := keys.Name(raw)
	k := &keys.Key{
		Token:                hash,
		KeyName:              &name,
		Models:               []string{},
		Aliases:              map[string]any{},
		Config:               map[string]any{},
		Permissions:          map[string]any{},
		Metadata:             map[string]any{},
		AllowedCacheControls: []string{},
		AllowedRoutes:        []string{},
		ModelSpend:           map[string]any{},
		ModelMaxBudget:       map[string]any{},
		CreatedAt:            &now,
		UpdatedAt:            &now,
		CreatedBy:            &who,
		UpdatedBy:            &who,
	}
	p.apply(k, now)
	if err := a.teamKeyRules(ctx, c, f, nil, k); err != nil {
		return nil, err
	}
	if err := a.st.Create(ctx, k); err != nil {
		return nil, fmt.Errorf("create key: %w", err)
	}
	a.invalidate(hash)
	a.audit(ctx, r, c, keys.ActionCreated, hash, nil, rowMap(k))
	return newGenerateResponse(k, raw, f, now), nil
}

func (a *API) update(r *http.Request, c *caller) (any, error) {
	f, err := decodeKeyFields(r, false)
	if err != nil {
		return nil, err
	}
	ctx := r.Context()
	var hash, sent string
	switch {
	case f.Key.ok():
		sent, hash = f.Key.V, keys.Ref(f.Key.V)
	case f.KeyAlias.ok():
		// The alias names the key to update; it does not change.
		k, err := a.st.GetByAlias(ctx, f.KeyAlias.V)
		if err != nil {
			return nil, fmt.Errorf("update: find alias: %w", err)
		}
		hash, sent = k.Token, k.Token
		f.KeyAlias = opt[string]{}
	default:
		return nil, invalid("key", "key: Field required (or key_alias)")
	}
	f.NewKey, f.GracePeriod = opt[string]{}, opt[string]{}
	stored, err := a.mayChange(ctx, c, f, hash, perm.RouteUpdate)
	if err != nil {
		return nil, fmt.Errorf("update: %w", err)
	}
	p, err := validate(f)
	if err != nil {
		return nil, err
	}
	if f.KeyAlias.ok() {
		if err := a.checkAlias(ctx, f.KeyAlias.V, hash); err != nil {
			return nil, err
		}
	}
	now := a.clock()
	if err := a.teamKeyChange(ctx, c, f, p, hash, stored, now); err != nil {
		return nil, fmt.Errorf("update key %s: %w", keys.Redact(hash), err)
	}
	who := changedBy(r, c)
	var before map[string]any
	k, err := a.st.Update(ctx, hash, func(k *keys.Key) error {
		before = rowMap(k)
		p.apply(k, now)
		k.UpdatedBy = &who
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("update key %s: %w", keys.Redact(hash), err)
	}
	a.invalidate(hash)
	a.audit(ctx, r, c, keys.ActionUpdated, hash, before, rowMap(k))
	return &updateResponse{keyRow: view(k, now), Key: sent}, nil
}

// maxOffset bounds /key/list's (page-1)*size.
const maxOffset = 1 << 40

// maxListItems bounds the keys one /key/delete or /v2/key/info names.
const maxListItems = 1000

// decodeLists decodes {"<name>": [strings]} bodies.
func decodeLists(r *http.Request, names ...string) ([]opt[[]string], error) {
	obj, err := readObject(r, false)
	if err != nil {
		return nil, err
	}
	out := make([]opt[[]string], len(names))
	fields := make([]namedField, len(names))
	for i, n := range names {
		fields[i] = namedField{n, &out[i]}
	}
	if err := decodeFields(obj, fields); err != nil {
		return nil, err
	}
	for i, o := range out {
		if len(o.V) > maxListItems {
			return nil, invalid(names[i], fmt.Sprintf("%s: at most %d items per request", names[i], maxListItems))
		}
	}
	return out, nil
}

func (a *API) delete(r *http.Request, c *caller) (any, error) {
	l, err := decodeLists(r, "keys", "key_aliases")
	if err != nil {
		return nil, err
	}
	ks, aliases := l[0], l[1]
	if !ks.ok() && !aliases.ok() {
		return nil, invalid("keys", "keys: Field required (or key_aliases)")
	}
	ctx := r.Context()
	var hashes []string
	for _, s := range ks.V {
		hashes = append(hashes, keys.Ref(s))
	}
	for _, al := range aliases.V {
		k, err := a.st.GetByAlias(ctx, al)
		if errors.Is(err, keys.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("delete: find alias: %w", err)
		}
		hashes = append(hashes, k.Token)
	}
	slices.Sort(hashes)
	hashes = slices.Compact(hashes)
	if a.roles(c) { // can_delete_verification_token, for every key first
		for _, h := range hashes {
			k, err := a.st.Get(ctx, h)
			if errors.Is(err, keys.ErrNotFound) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("delete: get: %w", err)
			}
			if err := a.canModifyKey(ctx, c, k, perm.RouteDelete); err != nil {
				return nil, err
			}
		}
	}
	var deleted []*keys.Key
	if len(hashes) > 0 {
		if deleted, err = a.st.Delete(ctx, hashes); err != nil {
			return nil, fmt.Errorf("delete keys: %w", err)
		}
	}
	if len(deleted) == 0 {
		return nil, apierr.New(http.StatusNotFound, apierr.TypeNotFound, "keys", "No keys found")
	}
	gone := make([]string, 0, len(deleted))
	for _, k := range deleted {
		gone = append(gone, k.Token)
	}
	a.invalidate(gone...)
	for _, k := range deleted {
		a.audit(ctx, r, c, keys.ActionDeleted, k.Token, rowMap(k), map[string]any{})
	}
	sent := ks.V
	if !ks.ok() {
		sent = aliases.V
	}
	return &deleteResponse{DeletedKeys: nonNilList(sent)}, nil
}

func (a *API) info(r *http.Request, c *caller) (any, error) {
	q := r.URL.Query().Get("key")
	if q == "" {
		q = c.hash // LiteLLM answers with the caller's hashed key
	}
	hash := keys.Ref(q)
	if c.key != nil && hash == c.hash {
		// the caller's own key; a rotated-out key in its grace period
		// resolves to the active row, as on the data plane
		hash = c.key.Token
	}
	ctx := r.Context()
	k, err := a.st.Get(ctx, hash)
	if a.roles(c) {
		// LiteLLM: a missing key answers 404 before any 403.
		if err != nil {
			return nil, fmt.Errorf("key info %s: %w", keys.Redact(hash), err)
		}
		if err := a.canRead(ctx, c, k); err != nil {
			return nil, err
		}
	} else if !c.admin {
		own := c.key != nil && hash == c.key.Token
		if !own && err == nil && k.UserID != nil && *k.UserID != "" && c.userID() == *k.UserID {
			own = true
		}
		if !own { // unknown keys too: no existence oracle for virtual keys
			return nil, apierr.New(http.StatusUnauthorized, apierr.TypeAuth, "key",
				"Authentication Error, a virtual key may only read its own key's info.")
		}
	}
	if err != nil {
		return nil, fmt.Errorf("key info %s: %w", keys.Redact(hash), err)
	}
	return &infoResponse{Key: q, Info: infoRow{keyRow: view(k, a.clock())}}, nil
}

func (a *API) infoV2(r *http.Request, c *caller) (any, error) {
	l, err := decodeLists(r, "keys")
	if err != nil {
		return nil, err
	}
	if !l[0].ok() {
		return nil, invalid("keys", "keys: Field required")
	}
	now := a.clock()
	rows := []*wireKey{}
	for _, s := range l[0].V {
		k, err := a.st.Get(r.Context(), keys.Ref(s))
		if errors.Is(err, keys.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("v2 key info: %w", err)
		}
		if err := a.canRead(r.Context(), c, k); err != nil {
			if errors.As(err, new(*apierr.Error)) {
				continue // keys the caller may not read are left out
			}
			return nil, fmt.Errorf("v2 key info: %w", err)
		}
		rows = append(rows, view(k, now))
	}
	return &infoV2Response{Key: l[0].V, Info: rows}, nil
}

func (a *API) list(r *http.Request, c *caller) (any, error) {
	qs, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, invalid("query", "query: malformed query string")
	}
	intParam := func(name string, def, lo, hi int) (int, error) {
		s := qs.Get(name)
		if s == "" {
			return def, nil
		}
		n, err := strconv.Atoi(s)
		if err != nil {
			return 0, invalid(name, name+": Input should be a valid integer")
		}
		if n < lo || n > hi {
			if hi == int(^uint(0)>>1) {
				return 0, invalid(name, fmt.Sprintf("%s: Input should be greater than or equal to %d", name, lo))
			}
			return 0, invalid(name, fmt.Sprintf("%s: Input should be between %d and %d", name, lo, hi))
		}
		return n, nil
	}
	boolParam := func(name string) (bool, error) {
		s := qs.Get(name)
		if s == "" {
			return false, nil
		}
		b, err := pybool.Parse(s)
		if err != nil {
			return false, invalid(name, name+": Input should be a valid boolean, unable to interpret input")
		}
		return b, nil
	}
	page, err := intParam("page", 1, 1, int(^uint(0)>>1))
	if err != nil {
		return nil, err
	}
	size, err := intParam("size", 10, 1, 100)
	if err != nil {
		return nil, err
	}
	full, err := boolParam("return_full_object")
	if err != nil {
		return nil, err
	}
	teamKeys, err := boolParam("include_team_keys")
	if err != nil {
		return nil, err
	}
	q := store.ListQuery{
		Page:           page,
		Size:           size,
		UserID:         qs.Get("user_id"),
		TeamID:         qs.Get("team_id"),
		OrganizationID: qs.Get("organization_id"),
		KeyAlias:       qs.Get("key_alias"),
		Desc:           true,
	}
	if a.roles(c) { // validate_key_list_check; non-admins see their own keys
		scope, err := perm.ListScope(c.acc, q.UserID, q.TeamID, q.OrganizationID)
		if err != nil {
			return nil, err
		}
		q.UserID = scope
		if teamKeys { // LiteLLM: and the keys of the teams the caller is an admin of
			if q.OrTeamIDs, err = a.adminTeams(r.Context(), c); err != nil {
				return nil, err
			}
		}
	}
	if h := qs.Get("key_hash"); h != "" {
		q.KeyHash = keys.Ref(h)
	}
	if s := qs.Get("sort_by"); s != "" {
		if !slices.Contains(store.SortColumns, s) {
			return nil, badRequest("sort_by", fmt.Sprintf("Invalid sort_by %q: must be one of %s", s, strings.Join(store.SortColumns, ", ")))
		}
		q.SortBy = s
	}
	switch s := qs.Get("sort_order"); strings.ToLower(s) {
	case "", "desc":
	case "asc":
		q.Desc = false
	default:
		return nil, badRequest("sort_order", fmt.Sprintf("Invalid sort_order %q: must be 'asc' or 'desc'", s))
	}
	if int64(page-1) > maxOffset/int64(size) { // an offset no store can serve (and no overflow computing it)
		return nil, invalid("page", fmt.Sprintf("page: Input should be less than or equal to %d for size %d", maxOffset/int64(size)+1, size))
	}
	res, err := a.st.List(r.Context(), q)
	if err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	out := &listResponse{TotalCount: res.Total, CurrentPage: page, TotalPages: (res.Total + size - 1) / size}
	if full {
		now := a.clock()
		rows := make([]*wireKey, 0, len(res.Keys))
		for _, k := range res.Keys {
			rows = append(rows, view(k, now))
		}
		out.Keys = rows
	} else {
		hs := make([]string, 0, len(res.Keys))
		for _, k := range res.Keys {
			hs = append(hs, k.Token)
		}
		out.Keys = hs
	}
	return out, nil
}

func (a *API) block(r *http.Request, c *caller) (any, error)   { return a.setBlocked(r, c, true) }
func (a *API) unblock(r *http.Request, c *caller) (any, error) { return a.setBlocked(r, c, false) }

func (a *API) setBlocked(r *http.Request, c *caller, blocked bool) (any, error) {
	var key opt[string]
	if err := decodeBody(r, namedField{"key", &key}); err != nil {
		return nil, err
	}
	if !key.ok() || key.V == "" {
		return nil, invalid("key", "key: Field required")
	}
	hash := keys.Ref(key.V)
	ctx := r.Context()
	before, err := a.st.Get(ctx, hash)
	if err != nil {
		return nil, fmt.Errorf("block: get %s: %w", keys.Redact(hash), err)
	}
	route := perm.RouteUnblock
	if blocked {
		route = perm.RouteBlock
	}
	if err := a.canModifyKey(ctx, c, before, route); err != nil {
		return nil, err
	}
	k, err := a.st.SetBlocked(ctx, hash, blocked)
	if err != nil {
		return nil, fmt.Errorf("block: set %s: %w", keys.Redact(hash), err)
	}
	a.invalidate(hash)
	action := keys.ActionBlocked
	if !blocked {
		action = keys.ActionUnblocked
	}
	a.audit(ctx, r, c, action, hash, rowMap(before), rowMap(k))
	return view(k, a.clock()), nil
}

func (a *API) regenerate(r *http.Request, c *caller) (any, error) {
	// LiteLLM takes the key from the body, else the query (the generated
	// OpenAPI and Ruby clients send it there, with an optional body), else
	// the path; the body itself is optional.
	f, err := decodeKeyFields(r, true)
	if err != nil {
		return nil, err
	}
	ref := ""
	switch {
	case f.Key.ok() && f.Key.V != "":
		ref = f.Key.V
	case r.URL.Query().Get("key") != "":
		ref = r.URL.Query().Get("key")
	default:
		ref = r.PathValue("key")
	}
	if ref == "" {
		return nil, badRequest("key", "No key passed in.")
	}
	p, err := validate(f)
	if err != nil {
		return nil, err
	}
	oldHash := keys.Ref(ref)
	newRaw := keys.Generate()
	if f.NewKey.ok() {
		newRaw = f.NewKey.V
	}
	newHash := keys.HashHex(newRaw)
	if newHash == oldHash {
		return nil, badRequest("new_key", "Key already exists")
	}
	ctx := r.Context()
	stored, err := a.mayChange(ctx, c, f, oldHash, perm.RouteRegenerate)
	if err != nil {
		return nil, fmt.Errorf("regenerate: %w", err)
	}
	if f.KeyAlias.ok() {
		if err := a.checkAlias(ctx, f.KeyAlias.V, oldHash); err != nil {
			return nil, err
		}
	}
	now := a.clock()
	if err := a.teamKeyChange(ctx, c, f, p, oldHash, stored, now); err != nil {
		return nil, fmt.Errorf("regenerate %s: %w", keys.Redact(oldHash), err)
	}
	var grace *time.Time
	if p.grace != nil {
		t := p.grace.AddTo(now)
		grace = &t
	}
	who := changedBy(r, c)
	name := keys.Name(newRaw)
	var before map[string]any
	k, err := a.st.Regenerate(ctx, oldHash, newHash, grace, func(k *keys.Key) error {
		before = rowMap(k)
		p.apply(k, now)
		k.KeyName = &name
		k.RotationCount++
		k.LastRotationAt = &now
		k.UpdatedBy = &who
		return nil
	})
	var ce *keys.ConflictError
	if errors.As(err, &ce) && ce.Field == "token" {
		return nil, badRequest("new_key", "Key already exists")
	}
	if err != nil {
		return nil, fmt.Errorf("regenerate %s: %w", keys.Redact(oldHash), err)
	}
	a.invalidate(oldHash, newHash)
	a.audit(ctx, r, c, keys.ActionRegenerated, newHash, before, rowMap(k))
	return newGenerateResponse(k, newRaw, f, now), nil
}

func (a *API) health(*http.Request, *caller) (any, error) {
	return &healthResponse{Key: "healthy"}, nil
}
