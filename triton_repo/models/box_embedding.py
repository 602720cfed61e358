"""BLS: crops every detected object from the original image and embeds all crops with clip_image.

Input boxes are the NMS graph's [max_det, 6] rows in letterboxed 640×640 pixels; outputs are in original
pixels. All crops of a request go to clip_image in as few calls as its max batch size allows.

Every image of a request is handled (a request may carry B images; its outputs are then [B, N_max, ...], the
rows past an image's own N padded with class_id -1, score 0 and zeros). In the gpu profile (parameters set by
the template): the decoded image arrives in GPU memory and is cropped there, clip_image's embeddings are asked
for in CPU memory, and the crops of all requests of one execute() go to clip_image together.
"""

import json
from dataclasses import dataclass

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

from triton_repo.runtime.batching import chunks, pad_stack
from triton_repo.runtime.boxes import to_original, valid_detections
from triton_repo.runtime.crops import crops_batch
from triton_repo.runtime.params import model_config, parameters
from triton_repo.runtime.tensors import to_numpy, to_torch


@dataclass
class _Image:
    """One image of a request, before its crops are embedded."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    names: np.ndarray
    crops: torch.Tensor


class TritonPythonModel:
    def initialize(self, args):
        params = parameters(model_config(args))
        self.class_names = json.loads(params["class_names"])
        self.size = int(params["clip_size"])
        self.mean = tuple(json.loads(params["clip_mean"]))
        self.std = tuple(json.loads(params["clip_std"]))
        self.interpolation = params["clip_interpolation"]
        self.dim = int(params["embedding_dim"])
        self.clip_model = params["clip_model"]
        self.clip_batch = int(params["clip_max_batch"])
        self.device = "cuda" if args.get("model_instance_kind") == "GPU" else "cpu"
        self.cpu_outputs = params.get("bls_output_memory") == "cpu"
        self.merge = params.get("merge_requests") == "1"

    def _clip(self, batch: torch.Tensor) -> np.ndarray:
        tensor = (pb_utils.Tensor.from_dlpack("clip_input", torch.utils.dlpack.to_dlpack(batch))
                  if batch.is_cuda else pb_utils.Tensor("clip_input", batch.numpy()))
        options = {}
        if self.cpu_outputs and hasattr(pb_utils, "PreferredMemory"):
            # a GPU clip_image answers in GPU memory otherwise; to_numpy() still copes if it does
            options["preferred_memory"] = pb_utils.PreferredMemory(pb_utils.TRITONSERVER_MEMORY_CPU, 0)
        response = pb_utils.InferenceRequest(model_name=self.clip_model, requested_output_names=["embedding"],
                                             inputs=[tensor], **options).exec()
        if response.has_error():
            raise RuntimeError(f"{self.clip_model}: {response.error().message()}")
        return to_numpy(pb_utils.get_output_tensor_by_name(response, "embedding"))

    def _embed(self, crops: torch.Tensor) -> np.ndarray:
        parts = [np.zeros((0, self.dim), dtype=np.float32)]
        for part in chunks(len(crops), self.clip_batch):
            parts.append(self._clip(crops[part].contiguous()))
        return np.concatenate(parts, axis=0)

    def _images(self, request) -> list[_Image]:
        def get(name):
            return pb_utils.get_input_tensor_by_name(request, name)

        detections_all = to_numpy(get("detections"))
        sizes, letterboxes = to_numpy(get("image_size")), to_numpy(get("letterbox"))
        image = get("decoded_image")
        pixels_all = to_torch(image) if self.device == "cuda" else to_numpy(image)
        images = []
        for b in range(len(detections_all)):
            detections = valid_detections(detections_all[b])
            boxes = to_original(detections[:, :4], letterboxes[b], sizes[b])
            crops = crops_batch(pixels_all[b], boxes, self.size, self.mean, self.std, self.interpolation,
                                self.device)
            classes = detections[:, 5].astype(np.int32)
            names = np.array([self.class_names[c] if 0 <= c < len(self.class_names) else str(c) for c in classes],
                             dtype=np.object_)
            images.append(_Image(boxes, detections[:, 4].astype(np.float32), classes, names, crops))
        return images

    def _respond(self, images: list[_Image], embeddings: np.ndarray):
        counts = [len(image.boxes) for image in images]
        per_image = np.split(embeddings.reshape(-1, self.dim), np.cumsum(counts)[:-1], axis=0)
        outputs = {
            "boxes": pad_stack([image.boxes.reshape(-1, 4) for image in images], 0.0),
            "scores": pad_stack([image.scores for image in images], 0.0),
            "class_ids": pad_stack([image.classes for image in images], -1),
            "class_names": pad_stack([image.names for image in images], ""),
            "object_embeddings": pad_stack([e.astype(np.float32, copy=False) for e in per_image], 0.0),
        }
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(k, v) for k, v in outputs.items()])

    @staticmethod
    def _error(exc: Exception):
        return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"box_embedding: {exc}"))

    def _all_crops(self, images: list[_Image]) -> torch.Tensor:
        return images[0].crops if len(images) == 1 else torch.cat([image.crops for image in images])

    def _one(self, request):
        images = self._images(request)
        return self._respond(images, self._embed(self._all_crops(images)))

    def _merged(self, requests) -> list:
        """All requests' crops in one series of clip_image calls (the gpu profile: far fewer BLS round trips).
        A request whose inputs fail gets its error; if the shared call fails, each request is retried alone."""
        prepared: list[list[_Image] | Exception] = []
        for request in requests:
            try:
                prepared.append(self._images(request))
            except Exception as exc:
                prepared.append(exc)
        ok = [p for p in prepared if not isinstance(p, Exception)]
        try:
            crops = [self._all_crops(images) for images in ok]
            shared = self._embed(torch.cat(crops) if len(crops) > 1 else crops[0]) if crops else None
        except Exception:
            shared = None
        embedded = iter(np.split(shared, np.cumsum([len(c) for c in crops])[:-1], axis=0)) if shared is not None \
            else None
        responses = []
        for images in prepared:
            if isinstance(images, Exception):
                responses.append(self._error(images))
                continue
            try:
                embeddings = next(embedded) if embedded is not None else self._embed(self._all_crops(images))
                responses.append(self._respond(images, embeddings))
            except Exception as exc:
                responses.append(self._error(exc))
        return responses

    def execute(self, requests):
        if self.merge:
            return self._merged(requests)
        responses = []
        for request in requests:
            try:
                responses.append(self._one(request))
            except Exception as exc:
                responses.append(self._error(exc))
        return responses
