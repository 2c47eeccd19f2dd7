package vaultd

// Typed results: one struct per result shape of PROTOCOL.md (and of the
// README's additive extensions), with its fields in wire order.
//
// Decoding is lenient where the protocol allows growth: keys a newer server
// adds are kept in Extra; a missing required key or a wrong type is an
// ErrProtocol that names the key, never its value. Enumerations (token
// status, job state, ...) are plain strings, so a newer server's value does
// not break an older client. Pointer fields are the protocol's "| nil"
// (and extension fields an older server leaves out); fields tagged
// ",optional" are extension fields that read as zero when absent.

// Health is the result of health.
type Health struct {
	Ready    bool   `vaultd:"ready"`
	Version  string `vaultd:"version"`
	HSM      string `vaultd:"hsm"`
	Store    string `vaultd:"store"`
	UptimeMS uint64 `vaultd:"uptime_ms"`
	Extra    Map    `vaultd:",extra"`
}

// TokenInfo is the network token as merchants see it (never its number).
type TokenInfo struct {
	Status           string  `vaultd:"status"`
	Scheme           string  `vaultd:"scheme"`
	TokenRef         *string `vaultd:"token_ref"`
	TokenLast4       *string `vaultd:"token_last4"`
	ExpMonth         *uint8  `vaultd:"exp_month"`
	ExpYear          *uint16 `vaultd:"exp_year"`
	PAR              *string `vaultd:"par"`
	TokenRequestorID *string `vaultd:"token_requestor_id"`
	UpdatedAt        uint64  `vaultd:"updated_at"`
	LastError        *string `vaultd:"last_error"`
	Extra            Map     `vaultd:",extra"`
}

// Card is the card of an alias record.
type Card struct {
	BIN        string `vaultd:"bin"`
	Last4      string `vaultd:"last4"`
	ExpMonth   uint8  `vaultd:"exp_month"`
	ExpYear    uint16 `vaultd:"exp_year"`
	Scheme     string `vaultd:"scheme"`
	PanRemoved bool   `vaultd:"pan_removed"`
	Extra      Map    `vaultd:",extra"`
}

// AliasRecord is the result of alias_status, transaction_tokens, provision
// and remove_pan.
type AliasRecord struct {
	Alias       string     `vaultd:"alias"`
	Fingerprint string     `vaultd:"fingerprint"`
	Type        string     `vaultd:"type"`
	Masked      string     `vaultd:"masked"`
	CreatedAt   uint64     `vaultd:"created_at"`
	Card        Card       `vaultd:"card"`
	TokenInfo   *TokenInfo `vaultd:"token_info"`
	Extra       Map        `vaultd:",extra"`
}

// TokenizeResult is {created} + alias_record, flattened.
type TokenizeResult struct {
	Created bool `vaultd:"created"`
	AliasRecord
}

// DeleteResult is the result of delete_alias.
type DeleteResult struct {
	Deleted bool `vaultd:"deleted"`
	Extra   Map  `vaultd:",extra"`
}

// Credentials is the result of credentials: a *NetworkTokenCredentials or
// a *PanCredentials (switch on the type).
type Credentials interface {
	// CredentialKind is the kind field: "network_token" or "pan".
	CredentialKind() string
	// CardScheme is the scheme field.
	CardScheme() string
}

// NetworkTokenCredentials is credentials answered with the network token.
// The token number is a Pan and the cryptogram a Secret: neither prints.
type NetworkTokenCredentials struct {
	Kind         string  `vaultd:"kind"`
	Scheme       string  `vaultd:"scheme"`
	NetworkToken Pan     `vaultd:"network_token"`
	ExpMonth     uint8   `vaultd:"exp_month"`
	ExpYear      uint16  `vaultd:"exp_year"`
	Cryptogram   *Secret `vaultd:"cryptogram"`
	ECI          *string `vaultd:"eci"`
	ATC          *uint16 `vaultd:"atc"`
	PAR          *string `vaultd:"par"`
	TokenRef     string  `vaultd:"token_ref"`
	Extra        Map     `vaultd:",extra"`
}

// CredentialKind is "network_token".
func (c *NetworkTokenCredentials) CredentialKind() string { return c.Kind }

// CardScheme is c.Scheme.
func (c *NetworkTokenCredentials) CardScheme() string { return c.Scheme }

// PanCredentials is credentials answered with the PAN (a Pan: it prints
// masked).
type PanCredentials struct {
	Kind           string `vaultd:"kind"`
	Scheme         string `vaultd:"scheme"`
	Pan            Pan    `vaultd:"pan"`
	ExpMonth       uint8  `vaultd:"exp_month"`
	ExpYear        uint16 `vaultd:"exp_year"`
	FallbackReason string `vaultd:"fallback_reason"`
	Extra          Map    `vaultd:",extra"`
}

// CredentialKind is "pan".
func (c *PanCredentials) CredentialKind() string { return c.Kind }

// CardScheme is c.Scheme.
func (c *PanCredentials) CardScheme() string { return c.Scheme }

// QueueCounts is stats.queue.
type QueueCounts struct {
	Due       uint64 `vaultd:"due"`
	Scheduled uint64 `vaultd:"scheduled"`
	InFlight  uint64 `vaultd:"in_flight"`
	Failed    uint64 `vaultd:"failed"`
	Reads     uint64 `vaultd:"reads,optional"`
	Extra     Map    `vaultd:",extra"`
}

// SchemeStats is one scheme of stats.schemes.
type SchemeStats struct {
	Provisioned uint64  `vaultd:"provisioned"`
	NotEligible uint64  `vaultd:"not_eligible"`
	Errors      uint64  `vaultd:"errors"`
	P50MS       uint64  `vaultd:"p50_ms"`
	P99MS       uint64  `vaultd:"p99_ms"`
	Paused      bool    `vaultd:"paused"`
	Breaker     *string `vaultd:"breaker"`
	Extra       Map     `vaultd:",extra"`
}

// KekUse is one entry of stats.keys.keks.
type KekUse struct {
	Scheme  string `vaultd:"scheme"`
	Version uint32 `vaultd:"version"`
	Tokens  uint64 `vaultd:"tokens"`
	Extra   Map    `vaultd:",extra"`
}

// KeyStats is stats.keys (extension).
type KeyStats struct {
	PanKeyVersion      uint32   `vaultd:"pan_key_version"`
	AuditKeyVersion    uint32   `vaultd:"audit_key_version"`
	ReencryptRemaining uint64   `vaultd:"reencrypt_remaining"`
	Reencrypted        uint64   `vaultd:"reencrypted"`
	Keks               []KekUse `vaultd:"keks,optional"`
	Extra              Map      `vaultd:",extra"`
}

// LogHeads is stats.logs (extension).
type LogHeads struct {
	AuditSeq  uint64 `vaultd:"audit_seq"`
	EventsSeq uint64 `vaultd:"events_seq"`
	Extra     Map    `vaultd:",extra"`
}

// HSMStats is stats.hsm (extension).
type HSMStats struct {
	ReinitAfterObjects uint64 `vaultd:"reinit_after_objects"`
	SessionObjects     uint64 `vaultd:"session_objects"`
	Reinitializations  uint64 `vaultd:"reinitializations"`
	LastReinitPauseMS  uint64 `vaultd:"last_reinit_pause_ms"`
	StandbySwitches    uint64 `vaultd:"standby_switches,optional"`
	KeyCopiesMade      uint64 `vaultd:"key_copies_made"`
	BackgroundQueued   uint64 `vaultd:"background_queued,optional"`
	BackgroundDone     uint64 `vaultd:"background_done,optional"`
	TokenKeyUnwraps    uint64 `vaultd:"token_key_unwraps,optional"`
	TokenKeysCached    uint64 `vaultd:"token_keys_cached,optional"`
	Extra              Map    `vaultd:",extra"`
}

// Stats is the result of stats.
type Stats struct {
	Aliases      uint64                 `vaultd:"aliases"`
	PansRetained uint64                 `vaultd:"pans_retained"`
	Tokens       map[string]uint64      `vaultd:"tokens"`
	Queue        QueueCounts            `vaultd:"queue"`
	Schemes      map[string]SchemeStats `vaultd:"schemes"`
	UptimeMS     uint64                 `vaultd:"uptime_ms"`
	Keys         *KeyStats              `vaultd:"keys"`
	Logs         *LogHeads              `vaultd:"logs"`
	HSM          *HSMStats              `vaultd:"hsm"`
	Extra        Map                    `vaultd:",extra"`
}

// Job is one job of queue_list.
type Job struct {
	JobID     string  `vaultd:"job_id"`
	Alias     string  `vaultd:"alias"`
	Kind      string  `vaultd:"kind"`
	Scheme    string  `vaultd:"scheme"`
	State     string  `vaultd:"state"`
	Attempts  uint32  `vaultd:"attempts"`
	NextAt    uint64  `vaultd:"next_at"`
	LastError *string `vaultd:"last_error"`
	Extra     Map     `vaultd:",extra"`
}

// QueueList is the result of queue_list.
type QueueList struct {
	Jobs  []Job   `vaultd:"jobs"`
	Next  *string `vaultd:"next"`
	Extra Map     `vaultd:",extra"`
}

// QueueRetryResult is the result of queue_retry.
type QueueRetryResult struct {
	JobID string `vaultd:"job_id"`
	State string `vaultd:"state"`
	Extra Map    `vaultd:",extra"`
}

// SchemePaused is the result of scheme_pause and scheme_resume.
type SchemePaused struct {
	Scheme string `vaultd:"scheme"`
	Paused bool   `vaultd:"paused"`
	Extra  Map    `vaultd:",extra"`
}

// TenantRetention is one tenant of retention.
type TenantRetention struct {
	Tenant           string  `vaultd:"tenant"`
	Policy           string  `vaultd:"policy"`
	PansRetained     uint64  `vaultd:"pans_retained"`
	DueNow           uint64  `vaultd:"due_now"`
	Due7d            uint64  `vaultd:"due_7d"`
	Due30d           uint64  `vaultd:"due_30d"`
	PurgedTotal      uint64  `vaultd:"purged_total"`
	OldestRetainedAt *uint64 `vaultd:"oldest_retained_at"`
	Extra            Map     `vaultd:",extra"`
}

// Retention is the result of retention.
type Retention struct {
	Tenants     []TenantRetention `vaultd:"tenants"`
	NextPurgeAt *uint64           `vaultd:"next_purge_at"`
	Extra       Map               `vaultd:",extra"`
}

// PurgeResult is the result of purge_due.
type PurgeResult struct {
	Purged uint64 `vaultd:"purged"`
	Extra  Map    `vaultd:",extra"`
}

// Event is one lifecycle or provisioning event.
type Event struct {
	Seq    uint64  `vaultd:"seq"`
	At     uint64  `vaultd:"at"`
	Alias  *string `vaultd:"alias"`
	Scheme *string `vaultd:"scheme"`
	Kind   string  `vaultd:"kind"`
	Detail string  `vaultd:"detail"`
	Extra  Map     `vaultd:",extra"`
}

// Events is the result of events.
type Events struct {
	Events []Event `vaultd:"events"`
	Extra  Map     `vaultd:",extra"`
}

// AuditRecord is one audit record.
type AuditRecord struct {
	Seq     uint64  `vaultd:"seq"`
	At      uint64  `vaultd:"at"`
	Client  string  `vaultd:"client"`
	UID     uint32  `vaultd:"uid"`
	PID     int32   `vaultd:"pid"`
	Op      string  `vaultd:"op"`
	Alias   *string `vaultd:"alias"`
	Outcome string  `vaultd:"outcome"`
	Extra   Map     `vaultd:",extra"`
}

// Audit is the result of audit.
type Audit struct {
	Records []AuditRecord `vaultd:"records"`
	ChainOK bool          `vaultd:"chain_ok"`
	Extra   Map           `vaultd:",extra"`
}

// KeyRotateResult is the result of key_rotate (extension).
type KeyRotateResult struct {
	Key     string `vaultd:"key"`
	Version uint32 `vaultd:"version"`
	Extra   Map    `vaultd:",extra"`
}

// KeyRetireResult is the result of key_retire (extension).
type KeyRetireResult struct {
	Label     string `vaultd:"label"`
	Destroyed bool   `vaultd:"destroyed"`
	Extra     Map    `vaultd:",extra"`
}

// BackupResult is the result of backup (extension).
type BackupResult struct {
	Path     string `vaultd:"path"`
	Aliases  uint64 `vaultd:"aliases"`
	Pans     uint64 `vaultd:"pans"`
	AuditSeq uint64 `vaultd:"audit_seq"`
	Extra    Map    `vaultd:",extra"`
}

// KekRefreshResult is the result of kek_refresh (extension).
type KekRefreshResult struct {
	Scheme  string `vaultd:"scheme"`
	Version uint32 `vaultd:"version"`
	Queued  uint64 `vaultd:"queued"`
	Extra   Map    `vaultd:",extra"`
}
