"""The payment provider as a Dagster resource, for the runs that talk to it (reconciliation)."""

import dagster as dg

from cmp_pipelines.core.config_payments import load_provider_settings
from cmp_pipelines.core.payment_provider import PaymentProvider, build_provider
from cmp_pipelines.core.settings import paths


class PaymentProviderResource(dg.ConfigurableResource):
    """`kind`: SANDBOX or STRIPE; empty (the default) takes config/payment_provider.yaml's, so reconciliation asks
    the provider the API charged through."""

    kind: str = ""

    def provider(self) -> PaymentProvider:
        return build_provider(self.kind or load_provider_settings(paths().config_dir).provider)
