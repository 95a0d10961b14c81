"""The payment provider as a Dagster resource, for the runs that talk to it (reconciliation)."""

import dagster as dg

from cmp_pipelines.core.payment_provider import PaymentProvider, build_provider


class PaymentProviderResource(dg.ConfigurableResource):
    """`kind` as in config/payment_provider.yaml (SANDBOX by default)."""

    kind: str = "SANDBOX"

    def provider(self) -> PaymentProvider:
        return build_provider(self.kind)
