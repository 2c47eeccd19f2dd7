module vaultd.local/client

go 1.19
