"""Long-tailed object detection and instance segmentation (methods.md §5).

torchvision's Faster R-CNN / Mask R-CNN with the RoI box classifier replaced by longtail's heads
(linear, cosine, causal norm), De-confound-TDE with background-exempted inference, the sigmoid
equalization loss, COCO-format data (LVIS uses the same format) and LVIS-style evaluation.

The flow mirrors classification: ``data`` (COCO files → long-tailed subset → batches) →
``models`` (detector with a longtail head) → ``train`` → ``evaluate`` (COCO AP, APr/APc/APf).
``synthetic`` writes a small long-tailed COCO-format set for tests and the CPU demo.
Needs ``pip install 'longtail[detection]'`` (pycocotools).
"""
