"""SecAgg+ (Bell et al. 2020), Flower's SecAggPlusWorkflow and secaggplus_mod."""

from fedattack.defences.base import AGGREGATOR, PARTICIPANT, Defence

DEFENCE = Defence(
    name="SecAgg+",
    key="federation.secure_aggregation",
    what="Flower's secure aggregation: the aggregator sees only the sum of the uploads",
    active=lambda exp: exp.federation.secure_aggregation is not None,
    label=lambda exp: "SecAgg+",
    hides={AGGREGATOR: "each participant's upload: it unmasks only the sum of the round's "
                       "sampled participants' uploads (their shapes and example counts stay "
                       "visible)",
           PARTICIPANT: "nothing a participant saw without it: it receives the global model"},
    hides_uploads_from_aggregator=True,
    server="strategies.secure_aggregation:CheckedSecAggPlusWorkflow",
    client="clients.client_app:secure_aggregation_mod",
)
