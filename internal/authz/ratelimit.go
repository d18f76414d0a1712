package authz

import (
	"context"
	"net/http"
	"slices"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/virtualkeys/sidecar/internal/apierr"
	"github.com/virtualkeys/sidecar/internal/cache"
	"github.com/virtualkeys/sidecar/internal/ratelimit"
)

// RateLimiter is what the Check needs of the rate limiter;
// *ratelimit.Limiter satisfies it.
type RateLimiter interface {
	Compile(limits []ratelimit.Limit) *ratelimit.Plan
	Check(ctx context.Context, p *ratelimit.Plan, model string) ratelimit.Result
}

// LeaseMetadataKey is the dynamic metadata field carrying the rate-limit
// lease, which ext_proc hands back to the limiter when the response ends.
const LeaseMetadataKey = "rl_lease"

// rateLimit is the last check, as LiteLLM runs its limiter after auth: it
// counts the allowed request d and denies it with 429 when a limit is
// exceeded. A key without limits costs one atomic load.
func (a *Authorizer) rateLimit(ctx context.Context, d Decision) Decision {
	if a.rl == nil {
		return d
	}
	plan := a.plan(d.Entry)
	if !plan.Limited() {
		return d
	}
	r := a.rl.Check(ctx, plan, d.Model)
	if _, denied := r.Denied(); denied {
		return Decision{Reason: ReasonRateLimited, Err: rateLimitError(&r), RateLimit: &r}
	}
	d.RateLimit = &r
	return d
}

// plan returns the entry's compiled limits, compiling them on first use.
func (a *Authorizer) plan(e *cache.Entry) *ratelimit.Plan {
	slot := e.RateLimitPlan()
	if p, ok := slot.Load().(*ratelimit.Plan); ok {
		return p
	}
	limits := ratelimit.KeyLimits(e.Key)
	if a.subjects != nil {
		// LiteLLM's order: api_key, user, team, team_member, model_per_key
		// (Compile orders them).
		limits = append(limits, a.subjects(e).Limits()...)
	}
	p := a.rl.Compile(limits)
	slot.Store(p) // a racing Store compiles the same plan
	return p
}

// rateLimitError is LiteLLM's 429 (an HTTPException: type and param "None").
func rateLimitError(r *ratelimit.Result) *apierr.Error {
	return apierr.New(http.StatusTooManyRequests, "None", "None", r.Message())
}

// RateLimitHeaders returns the rate-limit response headers of a decision:
// on a denial retry-after, rate_limit_type and reset_at (LiteLLM's); on an
// allow the OpenAI-style x-ratelimit-{limit,remaining}-{requests,tokens}
// (the key's own limits, else the first descriptor's) and LiteLLM v3's
// per-descriptor x-ratelimit-<descriptor>-{limit,remaining}-<type>. None
// for a key without limits.
func RateLimitHeaders(d *Decision) [][2]string {
	var buf [maxRLHeaders][2]string
	return slices.Clone(appendRateLimitHeaders(buf[:0], d))
}

const maxRLHeaders = 4 + 4*4 // generic, and up to 4 descriptor statuses in full

// rlNames are the header names per descriptor and kind: [kind][limit, remaining].
var rlNames = func() map[string][2][2]string {
	m := map[string][2][2]string{}
	for _, d := range []string{"", ratelimit.DescAPIKey, ratelimit.DescModelPerKey, ratelimit.DescUser, ratelimit.DescTeam, ratelimit.DescTeamMember, ratelimit.DescEndUser} {
		var n [2][2]string
		for k := ratelimit.Requests; k <= ratelimit.Tokens; k++ {
			p := "x-ratelimit-"
			if d != "" {
				p += d + "-"
			}
			n[k] = [2]string{p + "limit-" + k.String(), p + "remaining-" + k.String()}
		}
		m[d] = n
	}
	return m
}()

func appendRateLimitHeaders(out [][2]string, d *Decision) [][2]string {
	r := d.RateLimit
	if r == nil {
		return out
	}
	if s, denied := r.Denied(); denied {
		return append(out, [2]string{"retry-after", r.RetryAfter()}, [2]string{"rate_limit_type", s.Kind.String()}, [2]string{"reset_at", r.ResetAt()})
	}
	var generic [2]*ratelimit.Status // requests, tokens
	st := r.Statuses()
	for i := range st {
		s := &st[i]
		if s.Kind > ratelimit.Tokens {
			continue
		}
		if g := generic[s.Kind]; g == nil || (g.Descriptor != ratelimit.DescAPIKey && s.Descriptor == ratelimit.DescAPIKey) {
			generic[s.Kind] = s
		}
	}
	for _, s := range generic {
		if s != nil {
			n := rlNames[""][s.Kind]
			out = append(out, [2]string{n[0], strconv.FormatInt(s.Limit, 10)}, [2]string{n[1], strconv.FormatInt(max(0, s.Remaining), 10)})
		}
	}
	for i := range st {
		s := &st[i]
		if s.Kind > ratelimit.Tokens || len(out)+2 > maxRLHeaders {
			continue
		}
		if n, ok := rlNames[s.Descriptor]; ok {
			out = append(out, [2]string{n[s.Kind][0], strconv.FormatInt(s.Limit, 10)}, [2]string{n[s.Kind][1], strconv.FormatInt(s.Remaining, 10)})
		}
	}
	return out
}

// headerOptions renders headers in three allocations.
func headerOptions(prefix []*corev3.HeaderValueOption, h [][2]string) []*corev3.HeaderValueOption {
	opts := make([]corev3.HeaderValueOption, len(h))
	vals := make([]corev3.HeaderValue, len(h))
	out := make([]*corev3.HeaderValueOption, 0, len(prefix)+len(h))
	out = append(out, prefix...)
	for i, kv := range h {
		vals[i].Key, vals[i].Value = kv[0], kv[1]
		opts[i].Header, opts[i].AppendAction = &vals[i], corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
		out = append(out, &opts[i])
	}
	return out
}

// withRateLimit returns the (shared, memoised) allow response base with
// this request's rate-limit headers for the client and its lease in the
// dynamic metadata. base is not modified.
func withRateLimit(base *authv3.CheckResponse, d *Decision) *authv3.CheckResponse {
	ok := base.GetOkResponse()
	resp := &authv3.CheckResponse{Status: base.Status}
	okr := &authv3.OkHttpResponse{
		Headers: ok.GetHeaders(), HeadersToRemove: ok.GetHeadersToRemove(), QueryParametersToRemove: ok.GetQueryParametersToRemove(),
		ResponseHeadersToAdd: ok.GetResponseHeadersToAdd(),
	}
	var buf [maxRLHeaders][2]string
	if h := appendRateLimitHeaders(buf[:0], d); len(h) > 0 {
		okr.ResponseHeadersToAdd = headerOptions(okr.ResponseHeadersToAdd, h)
	}
	resp.HttpResponse = &authv3.CheckResponse_OkResponse{OkResponse: okr}
	resp.DynamicMetadata = base.DynamicMetadata
	if lease := d.RateLimit.Lease(); lease != "" {
		fields := make(map[string]*structpb.Value, len(base.GetDynamicMetadata().GetFields())+1)
		for k, v := range base.GetDynamicMetadata().GetFields() {
			fields[k] = v
		}
		fields[LeaseMetadataKey] = structpb.NewStringValue(lease)
		resp.DynamicMetadata = &structpb.Struct{Fields: fields}
	}
	return resp
}

// rateLimitDenied is the denied response of a rate-limit denial: LiteLLM's
// 429 with its retry-after, rate_limit_type and reset_at headers.
func rateLimitDenied(d *Decision) *authv3.CheckResponse {
	resp := deniedResponse(d.Err, d.Reason)
	dr := resp.GetDeniedResponse()
	var buf [maxRLHeaders][2]string
	dr.Headers = headerOptions(dr.Headers, appendRateLimitHeaders(buf[:0], d))
	return resp
}
