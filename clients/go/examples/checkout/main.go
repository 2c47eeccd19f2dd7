// A small checkout service on vaultd: reads card numbers (one per line,
// "PAN MM/YYYY") from standard input, never from arguments, stores each
// card (tokenize, as a merchant), waits until its network token is no
// longer pending, and asks for the payment credentials (as the forwarder)
// to pay 12.50 CHF. All cards go in parallel over one connection. It prints
// only the alias, the masked number and what kind of credential would go
// to the processor, never a card number, token number or cryptogram.
//
//	VAULTD_SOCKET=$PWD/var/vaultd.sock go run ./examples/checkout <<< "4111111111111111 12/2030"
//
// The uid running it needs the merchant and forwarder roles for tenant t-a
// (config/dev.toml gives both to the developer's uid).
package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	vaultd "vaultd.local/client"
)

const tenant = "t-a"

func checkout(ctx context.Context, vault *vaultd.Client, line string) {
	number, expiry, _ := strings.Cut(strings.TrimSpace(line), " ")
	month, year, _ := strings.Cut(expiry, "/")
	m, _ := strconv.Atoi(month)
	y, _ := strconv.Atoi(year)
	pan := vaultd.NewPan(number)
	card, err := vault.Tokenize(ctx, vaultd.TokenizeArgs{Pan: pan, ExpMonth: m, ExpYear: y})
	if err != nil {
		refused(err)
		return
	}
	fmt.Printf("stored %s as %s (new: %v)\n", card.Masked, card.Alias, card.Created)
	// The token service answers within a second or so; wait up to 30 s.
	for i := 0; i < 300; i++ {
		rec, err := vault.AliasStatus(ctx, card.Alias)
		if err != nil {
			refused(err)
			return
		}
		if rec.TokenInfo == nil || rec.TokenInfo.Status != "pending" {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	cred, err := vault.Credentials(ctx, vaultd.CredentialsArgs{
		Alias: card.Alias, Tenant: tenant, AmountMinor: 1250, Currency: "CHF",
	})
	if err != nil {
		refused(err)
		return
	}
	switch c := cred.(type) { // a Pan and a Secret print masked: %v is safe
	case *vaultd.NetworkTokenCredentials:
		fmt.Printf("pay with a network_token credential (%s): token %v, cryptogram %v\n", c.Scheme, c.NetworkToken, c.Cryptogram)
	case *vaultd.PanCredentials:
		fmt.Printf("pay with a pan credential (%s): %v, because %s\n", c.Scheme, c.Pan, c.FallbackReason)
	}
}

func refused(err error) {
	var e *vaultd.Error
	if errors.As(err, &e) { // e.Code is PROTOCOL.md's error code; retry when e.Retryable
		fmt.Fprintf(os.Stderr, "refused: %s (retryable: %v)\n", e.Code, e.Retryable)
		return
	}
	fmt.Fprintf(os.Stderr, "failed: %v (retryable: %v)\n", err, vaultd.IsRetryable(err))
}

func main() {
	vault := vaultd.New("", vaultd.WithTimeout(10*time.Second)) // $VAULTD_SOCKET or /run/vaultd/vaultd.sock
	defer vault.Close()
	ctx := context.Background()
	h, err := vault.Health(ctx)
	if err != nil {
		log.Fatalf("vaultd: %v", err)
	}
	fmt.Printf("vaultd ready: %v\n", h.Ready)
	var wg sync.WaitGroup
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		if line := sc.Text(); strings.TrimSpace(line) != "" {
			wg.Add(1)
			go func() { defer wg.Done(); checkout(ctx, vault, line) }() // pipelined on one connection
		}
	}
	wg.Wait()
}
