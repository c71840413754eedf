"""pytorch-grad-cam subclasses: Score-CAM without a progress bar, a fast Score-CAM over the top-k channels, and
EigenCAM with its sign fixed.

Imported lazily by :mod:`fer_core.explain.cams` (pytorch-grad-cam pulls in matplotlib and takes seconds to import).
"""

from __future__ import annotations

import numpy as np
import pytorch_grad_cam.score_cam as _score_cam
import torch
import torch.nn.functional as F
from pytorch_grad_cam import EigenCAM, ScoreCAM

from fer_core.explain.core import no_bar, silenced


class _NoTqdmModule:
    """Stands in for the ``tqdm`` module that ``pytorch_grad_cam.score_cam`` uses as ``tqdm.tqdm(...)``."""

    tqdm = staticmethod(no_bar)


class QuietScoreCAM(ScoreCAM):
    """pytorch-grad-cam's Score-CAM (Wang et al., CVPR-W 2020) with its tqdm bar silenced; ``batch_size``
    masked copies go through the model at a time."""

    def __init__(self, model, target_layers, reshape_transform=None, *, batch_size: int = 64):
        super().__init__(model, target_layers, reshape_transform=reshape_transform)
        self.batch_size = int(batch_size)

    def get_cam_weights(self, input_tensor, target_layer, targets, activations, grads):
        with silenced(_score_cam, "tqdm", _NoTqdmModule):
            return super().get_cam_weights(input_tensor, target_layer, targets, activations, grads)


class TopKScoreCAM(ScoreCAM):
    """Score-CAM scored over only the ``k`` channels with the highest mean activation, ``batch_size`` at a time.

    Score-CAM weights each channel by the model's score for the input masked with that channel's (upsampled,
    min-max normalised) activation, softmaxed over channels. Channels with weak activations contribute little
    to the weighted sum, so scoring only the strongest ``k`` costs ``k`` forward passes instead of one per
    channel (512 for ResNet-18's layer4); the others get weight 0. Only the weights computation differs from
    :class:`~pytorch_grad_cam.ScoreCAM`; hooks, targets and the CAM itself come from the library.
    """

    def __init__(self, model, target_layers, reshape_transform=None, *, k: int = 32, batch_size: int = 64):
        super().__init__(model, target_layers, reshape_transform=reshape_transform)
        if k < 1 or batch_size < 1:
            raise ValueError(f"TopKScoreCAM needs k >= 1 and batch_size >= 1 (got k={k}, batch_size={batch_size})")
        self.k, self.batch_size = int(k), int(batch_size)

    def get_cam_weights(self, input_tensor, target_layer, targets, activations, grads) -> np.ndarray:
        acts = torch.as_tensor(activations, device=self.device, dtype=torch.float32)   # B x K x h x w
        weights = torch.zeros(acts.shape[:2])
        k = min(self.k, acts.shape[1])
        with torch.no_grad():
            for i, (target, x, a) in enumerate(zip(targets, input_tensor, acts, strict=True)):
                top = a.flatten(1).mean(1).topk(k).indices
                masks = F.interpolate(a[top].unsqueeze(0), size=x.shape[-2:], mode="bilinear",
                                      align_corners=True).squeeze(0)                        # k x H x W
                lo = masks.flatten(1).amin(1).view(-1, 1, 1)
                hi = masks.flatten(1).amax(1).view(-1, 1, 1)
                masks = (masks - lo) / (hi - lo + 1e-8)
                scores = [target(self.model(x.unsqueeze(0) * masks[j:j + self.batch_size].unsqueeze(1)))
                          for j in range(0, k, self.batch_size)]
                weights[i, top.cpu()] = torch.softmax(torch.cat(scores).float().cpu(), dim=0)
        return weights.numpy()


class OrientedEigenCAM(EigenCAM):
    """EigenCAM (Muhammad & Yeasin, IJCNN 2020) with the sign of its principal component fixed.

    The first principal component of the activations is defined only up to its sign, so the library's map is
    sometimes the complement of the object (on the pretrained mini-Xception's ``stages.3.act1`` it lit the hair and
    background around the face). Here the projection is flipped when it anti-correlates with the mean activation
    over channels, so it always points where the layer fires.
    """

    def get_cam_image(self, input_tensor, target_layer, target_category, activations, grads, eigen_smooth):
        cams = super().get_cam_image(input_tensor, target_layer, target_category, activations, grads, eigen_smooth)
        mean = np.asarray(activations, dtype=np.float32).mean(axis=1)
        for cam, ref in zip(cams, mean, strict=True):
            if float(((cam - cam.mean()) * (ref - ref.mean())).sum()) < 0:
                cam *= -1
        return cams
