"""The cloud side: subscription ledger, entitlement issuer, firmware rollouts, fleet simulator."""
