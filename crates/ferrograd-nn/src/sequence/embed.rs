//! EmbedToken (a vector for each token) and GenerateToken (a score for each token, `x · E(y)`,
//! by default with the embedding's own weights).

use crate::{Init, Module, Param, ParamStore};
use ferrograd::{DType, Error, Result, Tensor};

/// A learned vector for each of `vocab` tokens: (…) i64 ids → (…, D). The padding id, if any,
/// embeds to zeros and its row gets no gradient (PyTorch's `padding_idx`).
pub struct EmbedToken {
    pub weight: Param,
    pub padding_id: Option<i64>,
}

impl EmbedToken {
    /// `weight` (V, D) under `store`, drawn N(0, 1) as PyTorch's `nn.Embedding`.
    ///
    /// ```
    /// use ferrograd::Tensor;
    /// use ferrograd_nn::{EmbedToken, Module, ParamStore};
    /// let embed = EmbedToken::new(ParamStore::new(0).sub("wte"), 65, 8, None).unwrap();
    /// let ids = Tensor::from_vec(vec![3i64, 1, 4, 1], &[2, 2]).unwrap();
    /// assert_eq!(embed.forward(&ids).unwrap().dims(), &[2, 2, 8]);
    /// let err = embed.forward(&Tensor::from_vec(vec![70i64], &[1]).unwrap()).unwrap_err();
    /// assert!(err.to_string().contains("token id 70 is outside the vocabulary of 65"));
    /// ```
    pub fn new(
        store: ParamStore,
        vocab: usize,
        dim: usize,
        padding_id: Option<i64>,
    ) -> Result<EmbedToken> {
        if vocab == 0 || dim == 0 {
            return Err(Error::value(
                "EmbedToken",
                format!("vocabulary and dimension must be positive, got {vocab} and {dim}"),
            ));
        }
        if let Some(p) = padding_id.filter(|&p| p < 0 || p as usize >= vocab) {
            return Err(Error::index(
                "EmbedToken",
                format!("padding id {p} is outside the vocabulary of {vocab}"),
            ));
        }
        let weight = store.param("weight", &[vocab, dim], Init::Normal { mean: 0.0, std: 1.0 })?;
        if let Some(p) = padding_id {
            let mut w = weight.get().to_vec_f64()?;
            w[p as usize * dim..(p as usize + 1) * dim].iter_mut().for_each(|v| *v = 0.0);
            weight.set(&Tensor::from_vec(w, &[vocab, dim])?.to_dtype(store.dtype())?)?;
        }
        Ok(EmbedToken { weight, padding_id })
    }

    pub fn vocab(&self) -> usize {
        self.weight.get().dims()[0]
    }
    pub fn dim(&self) -> usize {
        self.weight.get().dims()[1]
    }
}

impl Module for EmbedToken {
    fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        if ids.dtype() != DType::I64 {
            return Err(Error::dtype(
                "EmbedToken",
                format!("token ids must be i64, got {}", ids.dtype()),
            ));
        }
        let v = self.vocab();
        if let Some(bad) =
            ids.as_slice::<i64>("EmbedToken")?.iter().find(|&&i| i < 0 || i as usize >= v)
        {
            return Err(Error::index(
                "EmbedToken",
                format!("token id {bad} is outside the vocabulary of {v}"),
            ));
        }
        let flat = ids.reshape(&[ids.numel()])?;
        let mut dims = ids.dims().to_vec();
        dims.push(self.dim());
        let out = self.weight.get().index_select(0, &flat)?.reshape(&dims)?;
        match self.padding_id {
            None => Ok(out),
            Some(p) => {
                let keep = ids.ne(&Tensor::scalar(p))?.to_dtype(out.dtype())?.unsqueeze(-1)?;
                out.mul(&keep)
            }
        }
    }
    fn describe(&self) -> String {
        format!("EmbedToken({} tokens → {})", self.vocab(), self.dim())
    }
    fn blocks(&self) -> Vec<&'static str> {
        vec!["EmbedToken"]
    }
    fn params(&self) -> Vec<Param> {
        vec![self.weight.clone()]
    }
}

/// Scores every token y by `x · E(y)` (+ a bias per token): (…, D) → (…, V). Tied to an
/// EmbedToken's weights by default, as the lecture defines it; untied it has its own.
pub struct GenerateToken {
    pub weight: Param,
    pub bias: Option<Param>,
    tied: bool,
}

impl GenerateToken {
    /// Shares `embed`'s (V, D) weights.
    pub fn tied(embed: &EmbedToken) -> GenerateToken {
        GenerateToken { weight: embed.weight.clone(), bias: None, tied: true }
    }
    /// Its own `weight` (V, D) and `bias` (V) under `store`.
    pub fn untied(store: ParamStore, dim: usize, vocab: usize) -> Result<GenerateToken> {
        let init = Init::pytorch_default(dim);
        Ok(GenerateToken {
            weight: store.param("weight", &[vocab, dim], init)?,
            bias: Some(store.param("bias", &[vocab], init)?),
            tied: false,
        })
    }
}

impl Module for GenerateToken {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.weight.linear(x, self.bias.as_ref().map(|b| b.get()).as_ref())
    }
    fn describe(&self) -> String {
        let w = self.weight.get();
        format!(
            "GenerateToken({} → {} tokens{})",
            w.dims()[1],
            w.dims()[0],
            if self.tied { ", tied" } else { "" }
        )
    }
    fn blocks(&self) -> Vec<&'static str> {
        vec!["GenerateToken"]
    }
    fn params(&self) -> Vec<Param> {
        // Tied weights belong to the EmbedToken; listing them twice would count them twice.
        if self.tied {
            Vec::new()
        } else {
            std::iter::once(self.weight.clone()).chain(self.bias.clone()).collect()
        }
    }
}
