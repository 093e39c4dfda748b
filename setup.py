"""Build of the compiled extension ``lma_mmseg._ext``.

All package metadata lives in ``setup.cfg``; this file only adds the C++/CUDA
extension. A CUDA build is made when CUDA is available to torch at build time
or when ``FORCE_CUDA=1`` is set (e.g. on a build machine without a GPU).
"""
import glob
import os
import os.path as osp

from setuptools import setup

CSRC = osp.join('lma_mmseg', 'ops', 'csrc')


def _sources(*patterns):
    files = []
    for pattern in patterns:
        files += sorted(glob.glob(osp.join(CSRC, pattern)))
    return files


def make_extension():
    import torch
    from torch.utils.cpp_extension import (CUDA_HOME, CppExtension,
                                           CUDAExtension)

    force_cuda = os.getenv('FORCE_CUDA', '0') == '1'
    with_cuda = force_cuda or (torch.cuda.is_available()
                               and CUDA_HOME is not None)
    sources = _sources('pytorch/*.cpp', 'cpu/*.cpp')
    include_dirs = [osp.abspath(CSRC)]
    cxx_flags = ['-O3', '-std=c++17', '-fopenmp']
    extra_compile_args = {'cxx': cxx_flags}
    define_macros = []
    if with_cuda:
        if not torch.cuda.is_available():
            # no GPU to detect the architecture from: A100, H100/H200
            os.environ.setdefault('TORCH_CUDA_ARCH_LIST', '8.0;9.0')
        sources += _sources('cuda/*.cu')
        define_macros.append(('WITH_CUDA', None))
        extra_compile_args['nvcc'] = [
            '-O3', '-std=c++17', '--use_fast_math',
            '-U__CUDA_NO_HALF_OPERATORS__', '-U__CUDA_NO_HALF_CONVERSIONS__',
            '-U__CUDA_NO_BFLOAT16_CONVERSIONS__'
        ]
        ext_cls = CUDAExtension
    else:
        ext_cls = CppExtension
    return ext_cls(
        name='lma_mmseg._ext',
        sources=sources,
        include_dirs=include_dirs,
        define_macros=define_macros,
        extra_compile_args=extra_compile_args,
        extra_link_args=['-fopenmp'])


def get_cmdclass():
    from torch.utils.cpp_extension import BuildExtension
    return {'build_ext': BuildExtension.with_options(use_ninja=True)}


if __name__ == '__main__':
    setup(ext_modules=[make_extension()], cmdclass=get_cmdclass())
