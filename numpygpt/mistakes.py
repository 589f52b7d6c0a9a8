"""Deliberately wrong backward passes, one classic mistake per layer.

`numpygpt gradcheck --break LAYER` swaps one of these in (numpygpt.gradcheck.broken), to show
how a finite-difference check catches a dropped term: the relative error jumps from ~1e-10 to
~1e-1. Nothing but the gradient check uses them.
"""
import numpy as np

from . import layers
from .loss import SoftmaxCrossEntropy


class EmbeddingAssignsInsteadOfAdds(layers.Embedding):
    def backward(self, dout):
        c = self.weight.shape[1]
        self.dweight[self.ids.reshape(-1)] += dout.reshape(-1, c)  # fancy-index += keeps one repeat


class LayerNormWithoutMeanTerm(layers.LayerNorm):
    def backward(self, dout):
        x, mean, rstd = self.x, self.mean[:, None], self.rstd[:, None]
        dout2 = dout.reshape(x.shape)
        xhat = (x - mean) * rstd
        self.dweight += (dout2 * xhat).sum(axis=0)
        self.dbias += dout2.sum(axis=0)
        dxhat = dout2 * self.weight
        return (rstd * (dxhat - xhat * (dxhat * xhat).mean(axis=1, keepdims=True))).reshape(dout.shape)


class LinearWithoutBiasGradient(layers.Linear):
    def backward(self, dout):
        dout2 = dout.reshape(-1, self.weight.shape[1])
        self.dweight += self.x.T @ dout2
        return (dout2 @ self.weight.T).reshape(*dout.shape[:-1], self.weight.shape[0])


class GELUWithoutTanhDerivative(layers.GELU):
    def backward(self, dout):
        return dout * 0.5 * (1.0 + np.tanh(np.sqrt(2 / np.pi) * (self.x + 0.044715 * self.x ** 3)))


def softmax_backward_without_subtraction(dprobs, probs, scale, tile):
    dprobs[...] = scale * probs * dprobs


class AttentionWithoutSoftmaxSubtraction(layers.CausalSelfAttention):
    def backward(self, dout):
        real = layers.kernels.causal_softmax_backward
        layers.kernels.causal_softmax_backward = softmax_backward_without_subtraction
        try:
            return super().backward(dout)
        finally:
            layers.kernels.causal_softmax_backward = real


class DropoutWithoutScale(layers.Dropout):
    def backward(self, dout):
        return super().backward(dout) * (1.0 - self.p)


class MLPSkippingGELU(layers.MLP):
    def backward(self, dout):
        return self.c_fc.backward(self.c_proj.backward(self.dropout.backward(dout)))


class BlockWithoutResidualPath(layers.Block):
    def backward(self, dout):
        dx = self.ln_2.backward(self.mlp.backward(dout))
        return dx + self.ln_1.backward(self.attn.backward(dx))


class CrossEntropyWithoutMean(SoftmaxCrossEntropy):
    def backward(self, dloss=1.0):
        return super().backward(dloss) * max(self.n_kept, 1)


class LMHeadForgettingTiedUse(layers.LMHead):
    def backward(self, dlogits):
        d2 = dlogits.reshape(-1, self.weight.shape[0])
        return (d2 @ self.weight).reshape(*dlogits.shape[:-1], self.weight.shape[1])


def adamw_without_bias_correction(param, grad, m, v, weight_decay, lr, beta1, beta2, eps, step):
    m[:] = beta1 * m + (1 - beta1) * grad
    v[:] = beta2 * v + (1 - beta2) * grad * grad
    param -= lr * (m / (np.sqrt(v) + eps) + weight_decay * param)


BREAKS = {
    "embedding": ("Embedding", EmbeddingAssignsInsteadOfAdds,
                  "a repeated id keeps one row's gradient instead of the sum"),
    "layernorm": ("LayerNorm", LayerNormWithoutMeanTerm, "the mean(dxhat) term is dropped"),
    "linear": ("Linear", LinearWithoutBiasGradient, "the bias gradient is never accumulated"),
    "gelu": ("GELU", GELUWithoutTanhDerivative, "the derivative of tanh is dropped"),
    "attention": ("CausalSelfAttention", AttentionWithoutSoftmaxSubtraction,
                  "the softmax Jacobian's subtraction of rowsum(dP * P) is dropped"),
    "dropout": ("Dropout", DropoutWithoutScale, "the survivors' 1/(1 - p) scale is left out of the gradient"),
    "mlp": ("MLP", MLPSkippingGELU, "the gradient skips GELU's backward"),
    "block": ("Block", BlockWithoutResidualPath, "the residual's identity path is dropped"),
    "lm-head": ("LMHead", LMHeadForgettingTiedUse, "the weight's gradient is never accumulated"),
    "cross-entropy": ("SoftmaxCrossEntropy", CrossEntropyWithoutMean, "the 1/n of the mean is forgotten"),
    "adamw": ("adamw", staticmethod(adamw_without_bias_correction), "the bias correction is left out"),
}

MODEL_MISTAKE = "the tied embedding's second use (the LM head) adds nothing to its gradient"
