package vaultd

import "context"

// The typed methods, one per op. Each returns the op's result struct, or
// the server's *Error (errors.Is(err, ErrAliasNotFound), ...) or the
// client's *ClientError. A context without a deadline gets the client's
// timeout.

// Health: any authenticated client.
func (c *Client) Health(ctx context.Context) (*Health, error) {
	return callTyped[Health](ctx, c, OpHealth, Map{})
}

// Tokenize stores a card and returns its alias (collector, merchant).
func (c *Client) Tokenize(ctx context.Context, args TokenizeArgs) (*TokenizeResult, error) {
	return callTyped[TokenizeResult](ctx, c, OpTokenize, args.Map())
}

// TransactionTokens returns the alias remembered under a transaction id
// (merchant).
func (c *Client) TransactionTokens(ctx context.Context, transactionID string) (*AliasRecord, error) {
	return callTyped[AliasRecord](ctx, c, OpTransactionTokens, transactionArgs(transactionID))
}

// AliasStatus returns an alias's record (merchant).
func (c *Client) AliasStatus(ctx context.Context, alias string) (*AliasRecord, error) {
	return callTyped[AliasRecord](ctx, c, OpAliasStatus, aliasArgs(alias))
}

// Provision queues network token provisioning for an alias (merchant).
func (c *Client) Provision(ctx context.Context, alias string) (*AliasRecord, error) {
	return callTyped[AliasRecord](ctx, c, OpProvision, aliasArgs(alias))
}

// RemovePan erases an alias's PAN; it keeps working through its network
// token (merchant).
func (c *Client) RemovePan(ctx context.Context, alias string) (*AliasRecord, error) {
	return callTyped[AliasRecord](ctx, c, OpRemovePan, aliasArgs(alias))
}

// DeleteAlias erases an alias (merchant).
func (c *Client) DeleteAlias(ctx context.Context, alias string) (*DeleteResult, error) {
	return callTyped[DeleteResult](ctx, c, OpDeleteAlias, aliasArgs(alias))
}

// Credentials returns what to send to the processor: a
// *NetworkTokenCredentials or a *PanCredentials (forwarder).
func (c *Client) Credentials(ctx context.Context, args CredentialsArgs) (Credentials, error) {
	raw, err := c.Call(ctx, OpCredentials, args.Map())
	if err != nil {
		return nil, err
	}
	return decodeCredentials(raw)
}

// Stats (admin).
func (c *Client) Stats(ctx context.Context) (*Stats, error) {
	return callTyped[Stats](ctx, c, OpStats, Map{})
}

// QueueList pages through the provisioning queue (admin).
func (c *Client) QueueList(ctx context.Context, args QueueListArgs) (*QueueList, error) {
	return callTyped[QueueList](ctx, c, OpQueueList, args.Map())
}

// QueueRetry retries a failed job (admin).
func (c *Client) QueueRetry(ctx context.Context, jobID string) (*QueueRetryResult, error) {
	return callTyped[QueueRetryResult](ctx, c, OpQueueRetry, jobArgs(jobID))
}

// SchemePause pauses provisioning at a scheme (admin).
func (c *Client) SchemePause(ctx context.Context, scheme string) (*SchemePaused, error) {
	return callTyped[SchemePaused](ctx, c, OpSchemePause, schemeArgs(scheme))
}

// SchemeResume resumes provisioning at a scheme (admin).
func (c *Client) SchemeResume(ctx context.Context, scheme string) (*SchemePaused, error) {
	return callTyped[SchemePaused](ctx, c, OpSchemeResume, schemeArgs(scheme))
}

// Retention (admin).
func (c *Client) Retention(ctx context.Context) (*Retention, error) {
	return callTyped[Retention](ctx, c, OpRetention, Map{})
}

// PurgeDue erases the PANs due for purging, of one tenant or ("") of all
// (admin).
func (c *Client) PurgeDue(ctx context.Context, tenant string) (*PurgeResult, error) {
	return callTyped[PurgeResult](ctx, c, OpPurgeDue, purgeArgs(tenant))
}

// Events pages through lifecycle and provisioning events (admin).
func (c *Client) Events(ctx context.Context, args PageArgs) (*Events, error) {
	return callTyped[Events](ctx, c, OpEvents, args.Map())
}

// Audit pages through the audit log and checks its chain (admin).
func (c *Client) Audit(ctx context.Context, args PageArgs) (*Audit, error) {
	return callTyped[Audit](ctx, c, OpAudit, args.Map())
}

// KeyRotate rotates the PAN key ("" or "pan") or the audit key ("audit")
// (admin; extension).
func (c *Client) KeyRotate(ctx context.Context, key string) (*KeyRotateResult, error) {
	return callTyped[KeyRotateResult](ctx, c, OpKeyRotate, keyRotateArgs(key))
}

// KeyRetire destroys an old PAN key version (admin; extension).
func (c *Client) KeyRetire(ctx context.Context, version uint32) (*KeyRetireResult, error) {
	return callTyped[KeyRetireResult](ctx, c, OpKeyRetire, keyRetireArgs(version))
}

// Backup writes a consistent copy of the database to an absolute path
// (admin; extension).
func (c *Client) Backup(ctx context.Context, path string) (*BackupResult, error) {
	return callTyped[BackupResult](ctx, c, OpBackup, backupArgs(path))
}

// KekRefresh queues a key refresh for every token wrapped under a KEK
// version (admin; extension).
func (c *Client) KekRefresh(ctx context.Context, scheme string, version uint32) (*KekRefreshResult, error) {
	return callTyped[KekRefreshResult](ctx, c, OpKekRefresh, kekRefreshArgs(scheme, version))
}

// Ptr returns a pointer to v (for PageArgs.After).
func Ptr[T any](v T) *T { return &v }
