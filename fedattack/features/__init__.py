"""White-box attack features of target records over T model snapshots (Nasr et al., Fig. 1).

For each target record ``(x, y)`` and each observed snapshot ``W^{t}`` (t = 1..T, in time
order) the attacker computes, in one forward and one backward pass per snapshot:

- ``grad:<layer>``: the per-example gradient of the loss w.r.t. the layer's parameters, laid out
  as a matrix of ``rows = weight.shape[0]`` (out_features; conv: out_channels) by
  ``cols = weight[0].numel()`` (in_features; conv: in_channels * kh * kw), with the bias gradient,
  where the layer has a bias, concatenated as one extra last column. Row ``j`` then holds
  everything that feeds output unit (or channel) ``j``, which is what the attack's convolution
  over "the input size of the fully connected layer" reads (Section II-A). Per record:
  ``(T, rows, cols [+1])``.
- ``act:<layer>``: the output of the layer's activation function, flattened: ``(T, d)``. Nasr et
  al. attack "the outputs of individual activation layers" (Table III, Section II-A), so the
  layer's output is followed through the calls that take it as their first argument, through
  normalisation, dropout and a residual addition, to the first activation function (Tanh, ReLU,
  ..., as a module or as ``F.relu``): for the fully connected models ``tanh(W h + b)``; for a
  ResNet block's second convolution ``relu(bn(conv(x)) + shortcut)``. A layer no activation
  follows (the output layer: its logits; the prediction vector is ``output``) gives its own
  output. See :class:`_FollowToActivation`.
- ``output``: softmax probabilities ``(T, C)``; ``loss``: per-example cross-entropy ``(T, 1)``
  (computed in float64 from the logits, so a confidently correct record's loss is a small
  positive number, not the 0 of a float32 log-softmax, before it is stored as float32);
  ``label``: the one-hot true label ``(C,)`` (the same for every snapshot).

Layers are addressed by name or by index into :func:`fedattack.models.layer_names` (the
Linear and convolution modules in forward order; ``-1`` is the last layer).

Per-example gradients take one of two exact paths, chosen per selected layer
(:attr:`FeatureExtractor.engines`; :mod:`fedattack.features.gradients`):

- **Outer products** for each gradient layer whose type has a rule in
  :data:`fedattack.features.gradients.REGISTRY` (``nn.Linear``; ``nn.Conv2d`` with ``groups=1``
  and numeric zero padding; :func:`~fedattack.features.gradients.register_outer_product` adds
  one) and is in :attr:`FeatureExtractor.OUTER_PRODUCT_LAYERS`: one
  batched ``functional_call`` whose forward hooks keep each selected layer's input and make its
  output a leaf of the graph, one batched backward of the *sum* of the per-example losses to those
  outputs, then one ``bmm`` per layer written straight into the feature tensor. In eval mode the
  examples of a batch do not interact (BatchNorm uses running statistics, Dropout is off), so the
  gradient of the summed loss w.r.t. example ``i``'s layer output is example ``i``'s own; the
  layer's weight gradient is that signal times the layer input (for a convolution, its unfolded
  patches), summed over positions and calls, and a column of ones appended to the input yields
  the bias gradient as the last column. No parameter gradient and no per-example intermediate is
  ever formed, so this costs little more than one batched forward plus writing the features.
- **torch.func** for each other selected layer (grouped or transposed convolutions, ...), and
  for it alone: the other layers keep the outer products, so a model with one such layer costs
  one extra ``vmap`` pass that differentiates only that layer:
  ``vmap(grad_and_value(loss_of_one_example))`` over a ``functional_call`` of the model in which
  only the selected layers' parameters are the differentiated argument and every other parameter
  and buffer is a constant, so the backward pass stops at the earliest selected layer. It knows
  nothing of the layer's algebra, which is why it stays the general path; on Linear layers it
  materialises each example's gradients in a chunk and copies them (about twice as slow as the
  outer products on ``benchmarks/per_example_grads.py``).

Both use the models in eval mode (BatchNorm on running stats). Activations are captured by forward
hooks during the same call and the output and loss come out of it, so each snapshot costs one
pass per chunk.

Nothing here holds the features of all records at once: :meth:`FeatureExtractor.batches` streams
them, :meth:`FeatureExtractor.cache` streams them into ``.npy`` files that :class:`FeatureCache`
reads back by rows, and :meth:`FeatureExtractor.scalar_summaries` reduces them to a few numbers
per record and snapshot.
Records are processed in chunks sized by ``memory_mb`` from the feature sizes and from the
working memory of one record's pass, which the extractor measures once on a zero record (so
DenseNet's large saved activations shrink its chunks). Measured peaks of a chunk stay within
about twice ``memory_mb`` (allocator overheads); a batch that ``batches`` yields comes on top,
sized by its ``batch_size``.

The package: :mod:`~fedattack.features.spec` (what to compute, layer names, prediction
summaries), :mod:`~fedattack.features.gradients` (the per-example gradient engines and the
registry of outer-product layer types), :mod:`~fedattack.features.activations` (the activation
follower), :mod:`~fedattack.features.memory` (the working-memory probe and the batch buffer
pool), :mod:`~fedattack.features.cache` (the on-disk cache) and
:mod:`~fedattack.features.extractor` (the extractor).
"""

from fedattack.features.activations import (
    ACTIVATION_FUNCTIONS,
    PASS_THROUGH_FUNCTIONS,
)
from fedattack.features.cache import CACHE_INDEX, CACHE_VERSION, FeatureCache
from fedattack.features.extractor import Dataset, FeatureExtractor
from fedattack.features.gradients import grad_matrix, per_example_grads_loop
from fedattack.features.memory import _BatchBuffers as _BatchBuffers
from fedattack.features.spec import (
    OUTPUT_SCALES,
    FeatureSpec,
    LayerRef,
    class_logits,
    normalised_entropy,
    prediction_summaries,
    resolve_layers,
    true_class_logit_confidence,
)

__all__ = [
    "ACTIVATION_FUNCTIONS",
    "CACHE_INDEX",
    "CACHE_VERSION",
    "OUTPUT_SCALES",
    "PASS_THROUGH_FUNCTIONS",
    "Dataset",
    "FeatureCache",
    "FeatureExtractor",
    "FeatureSpec",
    "LayerRef",
    "class_logits",
    "grad_matrix",
    "normalised_entropy",
    "per_example_grads_loop",
    "prediction_summaries",
    "resolve_layers",
    "true_class_logit_confidence",
]
