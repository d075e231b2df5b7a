"""Video and audio values (VIDEO, AUDIO) and their file formats, through PyAV.

- :mod:`.video` the VIDEO type: :class:`~.video.VideoInput` and its two kinds,
  a file on disk (:class:`~.video.VideoFromFile`, decoded only when asked) and
  frames in memory (:class:`~.video.VideoFromComponents`), with ComfyUI's
  ``comfy_api`` interface so node packs can use them unchanged.
- :mod:`.audio` the AUDIO value ``{"waveform": [B, C, T] float tensor,
  "sample_rate": int}``: decoding any file PyAV reads, encoding FLAC, MP3 and
  Opus, band-limited resampling and the biquad filters the audio nodes use.

Importing this package imports neither torch nor PyAV; the submodules do.
"""
