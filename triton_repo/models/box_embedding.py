"""BLS: crops every detected object from the original image and embeds all crops with clip_image.

Input boxes are the NMS graph's [max_det, 6] rows in letterboxed 640×640 pixels; outputs are in original
pixels. All crops of a request go to clip_image in as few calls as its max batch size allows.
"""

import json

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

from triton_repo.runtime.batching import chunks
from triton_repo.runtime.boxes import to_original, valid_detections
from triton_repo.runtime.crops import crops_batch
from triton_repo.runtime.params import model_config, parameters


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

    def _embed(self, crops: torch.Tensor) -> np.ndarray:
        parts = [np.zeros((0, self.dim), dtype=np.float32)]
        for part in chunks(len(crops), self.clip_batch):
            batch = crops[part].contiguous()
            tensor = (pb_utils.Tensor.from_dlpack("clip_input", torch.utils.dlpack.to_dlpack(batch))
                      if batch.is_cuda else pb_utils.Tensor("clip_input", batch.numpy()))
            response = pb_utils.InferenceRequest(model_name=self.clip_model, requested_output_names=["embedding"],
                                                 inputs=[tensor]).exec()
            if response.has_error():
                raise RuntimeError(f"{self.clip_model}: {response.error().message()}")
            parts.append(pb_utils.get_output_tensor_by_name(response, "embedding").as_numpy())
        return np.concatenate(parts, axis=0)

    def _one(self, request):
        def get(name):
            return pb_utils.get_input_tensor_by_name(request, name)

        detections = valid_detections(get("detections").as_numpy()[0])
        image_hw = get("image_size").as_numpy()[0]
        boxes = to_original(detections[:, :4], get("letterbox").as_numpy()[0], image_hw)
        image = get("decoded_image")
        pixels = (torch.utils.dlpack.from_dlpack(image.to_dlpack())[0] if self.device == "cuda"
                  else image.as_numpy()[0])
        crops = crops_batch(pixels, boxes, self.size, self.mean, self.std, self.interpolation, self.device)
        classes = detections[:, 5].astype(np.int32)
        names = np.array([self.class_names[c] if 0 <= c < len(self.class_names) else str(c) for c in classes],
                         dtype=np.object_)
        outputs = {
            "boxes": boxes.reshape(1, -1, 4),
            "scores": detections[:, 4].astype(np.float32).reshape(1, -1),
            "class_ids": classes.reshape(1, -1),
            "class_names": names.reshape(1, -1),
            "object_embeddings": self._embed(crops).reshape(1, -1, self.dim),
        }
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(k, v) for k, v in outputs.items()])

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                responses.append(self._one(request))
            except Exception as exc:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"box_embedding: {exc}")))
        return responses
